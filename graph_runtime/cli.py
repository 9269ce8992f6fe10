"""The ``guidegraph`` command: run, validate, nodes, schema, plus commands from other packages.

Exit codes: 0 success, 1 execution failure (or interruption), 2 invalid workflow or usage.
Other packages add subcommands through the ``guidegraph.commands`` entry-point group: each entry
point is ``register(subparsers) -> None`` and sets ``func=callable(args) -> int``. Only the command
being run is loaded (``guidegraph --help`` lists the others by name), so a heavy or broken command
costs nothing to the rest; a command that cannot be loaded says why when it is asked for.

Nothing heavy is imported before a command runs (``--help`` answers in tens of milliseconds), and
``validate`` never imports torch: the runtime loads it when something executes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graph_runtime.registry import Registry

log = logging.getLogger(__name__)
COMMAND_GROUP = "guidegraph.commands"
EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


class UsageError(Exception):
    """A bad command line (exit code 2)."""


def _registry() -> Registry:
    from graph_runtime.registry import Registry

    registry = Registry.from_entry_points()
    for line in registry.load_errors:
        print(f"warning: {line}", file=sys.stderr)
    return registry


def parse_assignment(text: str) -> tuple[str, str, Any]:
    """``NODE.INPUT=VALUE`` -> (node, input, value); VALUE is JSON when it parses, else a string."""
    target, sep, raw = text.partition("=")
    node, dot, name = target.rpartition(".")
    if not sep or not dot or not node or not name:
        raise UsageError(f"--set {text!r}: expected NODE.INPUT=VALUE, e.g. --set 3.steps=20")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    if isinstance(value, list):
        value = {"__value__": value}
    return node, name, value


def apply_assignments(prompt: dict[str, Any], assignments: Sequence[str]) -> None:
    """Apply ``--set`` overrides; a node may be named by id or by its unique title."""
    for text in assignments:
        node, name, value = parse_assignment(text)
        if node not in prompt:
            matches = [nid for nid, n in prompt.items() if n.get("_meta", {}).get("title") == node]
            if len(matches) != 1:
                known = ", ".join(sorted(prompt)[:20])
                raise UsageError(f"--set {text!r}: no node {node!r} in the workflow (ids: {known})")
            node = matches[0]
        prompt[node].setdefault("inputs", {})[name] = value


def cmd_run(args: argparse.Namespace) -> int:
    from graph_runtime.context import CancelToken, Paths
    from graph_runtime.executor import Executor, ValidationFailed
    from graph_runtime.progress import ProgressPrinter, summary
    from graph_runtime.validation import validate
    from graph_runtime.workflow import load_workflow

    registry = _registry()
    prompt = load_workflow(args.workflow, registry)
    apply_assignments(prompt, args.set or [])
    if args.workers is not None and args.workers < 1:
        raise UsageError("--workers must be at least 1")
    if args.sweep or args.ray is not None:
        return cmd_sweep(args, registry, prompt)
    if args.workers is not None:
        raise UsageError("--workers needs --ray")
    report = validate(prompt, registry, args.outputs)
    _print_warnings(report.warnings)
    if not report.ok:
        _print_problems(report.messages())
        return EXIT_INVALID
    output_dir = Path(args.output)
    try:
        executor = Executor(registry, device=args.device, cache="none", paths=Paths(output=output_dir))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    printer = ProgressPrinter(prompt)
    cancel = CancelToken()

    def interrupt(signum: int, frame: FrameType | None) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        print("\ninterrupting (Ctrl-C again to abort at once)", file=sys.stderr)
        cancel.cancel()

    previous = signal.signal(signal.SIGINT, interrupt)
    try:
        result = executor.run(prompt, outputs=args.outputs, on_event=printer, cancel=cancel)
    except ValidationFailed as exc:
        _print_problems(exc.report.messages())
        return EXIT_INVALID
    finally:
        signal.signal(signal.SIGINT, previous)
        printer.end_line()
    for line in summary(result, output_dir):
        print(line, file=sys.stderr if not result.ok else sys.stdout)
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_sweep(args: argparse.Namespace, registry: Registry, prompt: dict[str, Any]) -> int:
    """``run --sweep`` (and ``run --ray``): every point validated, then run here or on Ray workers."""
    from graph_runtime import sweep
    from graph_runtime.context import CancelToken, Paths
    from graph_runtime.executor import Executor
    from graph_runtime.registry import Registry
    from graph_runtime.validation import validate

    try:
        points = sweep.expand(prompt, args.sweep or [], apply_assignments)
    except sweep.SweepError as exc:
        raise UsageError(str(exc)) from None
    problems = []
    for point in points:
        report = validate(point.prompt, registry, args.outputs)
        problems += [f"[{point.label()}] {line}" for line in ([] if report.ok else report.messages())]
    if problems:
        _print_problems(problems[:50])
        return EXIT_INVALID
    output = Path(args.output)
    bar = sweep.SweepBar(len(points))
    cancel = CancelToken()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: cancel.cancel())
    try:
        if args.ray is not None:
            if importlib.util.find_spec("ray") is None:
                raise UsageError("--ray needs Ray: pip install 'guidegraph[ray]'")
            try:
                sweep.run_ray(
                    points,
                    Registry.from_entry_points,
                    output,
                    bar,
                    cancel,
                    address=args.ray or None,
                    workers=args.workers,
                    device=args.device,
                )
            except ConnectionError as exc:
                raise UsageError(str(exc)) from None
        else:
            executor = Executor(registry, device=args.device, cache="lru", paths=Paths(output=output))
            sweep.run_local(points, executor, bar, cancel)
    finally:
        signal.signal(signal.SIGINT, previous)
        bar.end()
    index = sweep.write_index(points, output)
    failed = [p for p in points if p.result is None or not p.result.ok]
    print(f"{len(points) - len(failed)} of {len(points)} points succeeded; index: {index}")
    for point in failed[:20]:
        reasons = [f.message for f in point.result.failures.values()] if point.result else ["not run"]
        print(f"  [{point.label()}] on {point.worker}: {'; '.join(reasons)}", file=sys.stderr)
    return EXIT_OK if not failed else EXIT_FAILED


def cmd_validate(args: argparse.Namespace) -> int:
    from graph_runtime.validation import validate
    from graph_runtime.workflow import load_workflow

    registry = _registry()
    prompt = load_workflow(args.workflow, registry)
    report = validate(prompt, registry, args.outputs)
    _print_warnings(report.warnings)
    if args.json:
        print(json.dumps(report.to_comfy() if not report.ok else {"node_errors": {}}, indent=2))
    elif report.ok:
        print(f"ok: {len(prompt)} nodes, outputs {', '.join(report.good_outputs)}")
    else:
        _print_problems(report.messages(), stream=sys.stdout)
    return EXIT_OK if report.ok else EXIT_INVALID


def _print_warnings(lines: list[str]) -> None:
    for line in lines:
        print(f"warning: {line}", file=sys.stderr)


def _print_problems(lines: list[str], stream: Any = None) -> None:
    stream = stream or sys.stderr
    print(f"invalid workflow: {len(lines)} problem{'s' if len(lines) != 1 else ''}", file=stream)
    for line in lines:
        print(f"  {line}", file=stream)


def cmd_nodes(args: argparse.Namespace) -> int:
    from graph_runtime.registry import editor_order, input_spec

    registry = _registry()
    info = registry.object_info()
    if args.names:
        unknown = [n for n in args.names if n not in info]
        if unknown:
            raise UsageError(f"unknown node type(s): {', '.join(unknown)}")
        info = {n: info[n] for n in args.names}
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    for name in sorted(info, key=lambda n: (info[n]["category"], n)):
        cls = registry.classes[name]
        flag = " (output)" if cls.output_node else ""
        print(f"{name}  [{cls.category}]{flag}")
        for spec in editor_order(cls):
            kind, opts = input_spec(spec)
            kind = "COMBO " + json.dumps(kind) if isinstance(kind, list) else kind
            extra = " = " + json.dumps(opts["default"]) if "default" in opts else ""
            bounds = f" [{opts['min']}, {opts['max']}]" if "min" in opts and abs(opts["max"]) < 1e18 else ""
            optional = " (optional)" if spec.optional else ""
            print(f"    in  {spec.name}: {kind}{extra}{bounds}{optional}")
        for out in cls.outputs:
            print(f"    out {out.name}: {out.type}")
    if not info:
        print("no node types registered", file=sys.stderr)
    return EXIT_OK


def cmd_schema(args: argparse.Namespace) -> int:
    from graph_runtime.schema import workflow_json_schema

    print(json.dumps(workflow_json_schema(args.format), indent=2))
    return EXIT_OK


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; of the commands from other packages, only the one ``argv`` names is loaded."""
    plugins = {ep.name: ep for ep in entry_points(group=COMMAND_GROUP)}
    parser = argparse.ArgumentParser(
        prog="guidegraph",
        description="Run and inspect guidegraph workflows.",
        epilog="guidegraph COMMAND --help describes each command." if plugins else None,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = sub.add_parser("run", help="run a workflow headless")
    run.add_argument("workflow", help="workflow JSON (API or editor format) or a PNG carrying one")
    run.add_argument(
        "--set", action="append", metavar="NODE.INPUT=VALUE", help="override an input (repeatable)"
    )
    run.add_argument(
        "--output", default="output", metavar="DIR", help="where output nodes write (default: output)"
    )
    run.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N or mps")
    run.add_argument(
        "--outputs",
        type=lambda s: s.split(","),
        default=None,
        metavar="ID,...",
        help="run only these nodes and what they need",
    )
    run.add_argument(
        "--sweep",
        action="append",
        metavar="NODE.INPUT=VALUES",
        help="run once per value: A..B, a JSON list or a,b,c (repeatable: their product)",
    )
    run.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="fan the sweep across Ray workers: a cluster's address, or none for a local cluster",
    )
    run.add_argument("--workers", type=int, default=None, metavar="N", help="with --ray: how many workers")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("validate", help="check a workflow and print every problem")
    check.add_argument("workflow")
    check.add_argument("--outputs", type=lambda s: s.split(","), default=None, metavar="ID,...")
    check.add_argument("--json", action="store_true", help="print ComfyUI's error shape")
    check.set_defaults(func=cmd_validate)
    nodes = sub.add_parser("nodes", help="list node types with their inputs and outputs")
    nodes.add_argument("names", nargs="*", help="only these node types")
    nodes.add_argument("--json", action="store_true", help="print the /object_info entries")
    nodes.set_defaults(func=cmd_nodes)
    schema = sub.add_parser("schema", help="print the JSON Schema of the workflow formats")
    schema.add_argument("--format", choices=("any", "api", "ui"), default="any")
    schema.set_defaults(func=cmd_schema)
    wanted = next(
        (word for word in (sys.argv[1:] if argv is None else argv) if not word.startswith("-")), None
    )
    for name, ep in sorted(plugins.items()):
        if name == wanted:
            _add_plugin_command(sub, ep)
        else:
            sub.add_parser(name, help=f"see guidegraph {name} --help")
    return parser


def _add_plugin_command(sub: Any, ep: EntryPoint) -> None:
    """Let the entry point register its parser; if it cannot, the command says why when run."""
    try:
        ep.load()(sub)
    except Exception as exc:  # a command whose package is missing or broken must not break the CLI
        reason = f"command {ep.name!r} ({ep.value}) could not be loaded: {type(exc).__name__}: {exc}"
        log.debug(reason, exc_info=True)
        broken = sub.add_parser(ep.name, help="(could not be loaded)")
        broken.set_defaults(func=lambda args: _fail_to_load(reason))


def _fail_to_load(reason: str) -> int:
    print(f"guidegraph: {reason}", file=sys.stderr)
    return EXIT_INVALID


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_INVALID
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_INVALID
    try:
        return int(func(args))
    except UsageError as exc:
        print(f"guidegraph {args.command}: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except Exception as exc:
        from graph_runtime.workflow import WorkflowFormatError  # loaded by any command that reads one

        if not isinstance(exc, WorkflowFormatError):
            raise
        print(f"invalid workflow: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:  # a file or folder named on the command line cannot be used
        where = f" {exc.filename}" if exc.filename else ""
        print(f"guidegraph {args.command}: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
