"""Each image through the vision tower once per forward, however many sequences show it.

A batch of B·D (image, dimension) prompts — or B·D·G reasoning chains — repeats every image D (or D·G) times,
and the sequences' pixels are gathered in sequence order (`zreward.models.batch.build_batch`). Inside
`encode_each_image_once(model, image_index, pixels)` the vision tower of a Qwen-family VLM (`model.model.visual`:
Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Qwen3.5) receives the patches of each distinct image once (a forward pre-hook keeps
the first occurrence of each), and its outputs — merged image tokens (`pooler_output`), patch states
(`last_hidden_state`) and Qwen3-VL's deepstack features — are expanded back to the sequence order (a forward
hook; an index_select, so gradients of the repeats sum into the one computation exactly as they did before).
The language model still runs over every sequence. Generation works too: only the prefill calls the tower.

Families without a `visual` tower (LLaVA, Gemma 3) and batches without repeats run unchanged. The hooks are
state of the model instance: one forward at a time per model (as the serve batcher's single scoring thread).
"""
from __future__ import annotations

import contextlib

import torch

from zreward.models.batch import item_images
from zreward.models.preprocess import PixelInputs


def vision_tower(model) -> torch.nn.Module | None:
    """The Qwen-family vision tower (`<base>.model.visual`) through DDP / peft wrappers, or None."""
    base = getattr(model, "module", model)
    if hasattr(base, "get_base_model"):
        base = base.get_base_model()
    return getattr(getattr(base, "model", None), "visual", None)


def _expand(value, index_by_rows: dict[int, torch.Tensor]):
    """Expand a tensor (or a list/tuple of them) whose first dim matches a known unique-row count."""
    if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] in index_by_rows:
        return value.index_select(0, index_by_rows[value.shape[0]].to(value.device))
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
        return type(value)(_expand(v, index_by_rows) for v in value)
    return value


def _rows(starts: list[int], counts: list[int], order: list[int]) -> torch.Tensor:
    return torch.cat([torch.arange(starts[u], starts[u] + counts[u]) for u in order])


@contextlib.contextmanager
def encode_each_image_once(model, image_index: list, pixels: PixelInputs):
    """Within the block, a forward of `model` over sequences showing `image_index` encodes each image once.

    Args:
        image_index: per sequence, the entry (or entries, for several placeholders) of `pixels` it shows — the
            same list given to `build_batch`.
        pixels: the PixelInputs those entries index (Qwen layout: `grids` per image).
    """
    tower = vision_tower(model)
    occ = [j for js in item_images(image_index) for j in js]  # images in the order the tower sees them
    if tower is None or pixels.grids is None or len(set(occ)) == len(occ):
        yield
        return
    merge = int(getattr(tower, "spatial_merge_size", 2)) ** 2
    uniq = list(dict.fromkeys(occ))
    slot = {j: u for u, j in enumerate(uniq)}
    patches = [int(pixels.grids[j].prod()) for j in occ]
    starts = [0]
    for n in patches[:-1]:
        starts.append(starts[-1] + n)
    first = [occ.index(j) for j in uniq]
    u_patch = [patches[i] for i in first]
    u_merged = [n // merge for n in u_patch]
    u_patch_start = [sum(u_patch[:u]) for u in range(len(uniq))]
    u_merged_start = [sum(u_merged[:u]) for u in range(len(uniq))]
    order = [slot[j] for j in occ]
    index_by_rows = {sum(u_patch): _rows(u_patch_start, u_patch, order),
                     sum(u_merged): _rows(u_merged_start, u_merged, order)}
    active = []

    def pre(_mod, args, kwargs):
        x = args[0] if args else kwargs.get("hidden_states", kwargs.get("pixel_values"))
        grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        if x is None or grid is None or grid.shape[0] != len(occ) or x.shape[0] != sum(patches):
            active.append(False)  # not the batch this context was made for: leave it alone
            return None
        active.append(True)
        keep = torch.cat([torch.arange(starts[i], starts[i] + patches[i]) for i in first]).to(x.device)
        x_u, grid_u = x.index_select(0, keep), grid[torch.tensor(first, device=grid.device)]
        rest = tuple(args[2:]) if len(args) > 2 else ()
        kwargs = {k: v for k, v in kwargs.items() if k not in ("hidden_states", "pixel_values", "grid_thw")}
        return (x_u, grid_u) + rest, kwargs

    def post(_mod, _args, _kwargs, out):
        if not active.pop():
            return None
        if isinstance(out, torch.Tensor):
            return _expand(out, index_by_rows)
        for key in list(out.keys()):
            out[key] = _expand(out[key], index_by_rows)
        return out

    h1 = tower.register_forward_pre_hook(pre, with_kwargs=True)
    h2 = tower.register_forward_hook(post, with_kwargs=True)
    try:
        yield
    finally:
        h1.remove()
        h2.remove()
