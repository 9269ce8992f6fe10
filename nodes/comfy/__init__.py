"""ComfyUI's core node interfaces, as thin nodes over guidegraph's own values and GUIDANCE programs.

Names, inputs (and their order, which is the editor's widget order), defaults, outputs and categories
follow ComfyUI's, so a workflow saved by ComfyUI runs unchanged. Underneath, a KSampler is a
CFGCombine + Sampler, so any ComfyUI workflow can swap its CFG for another GUIDANCE program. Where
ComfyUI's numerics differ from ours under the same name, the ComfyUI-named node behaves as ComfyUI.
"""
