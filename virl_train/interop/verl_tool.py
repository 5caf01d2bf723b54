"""The ViRL crop tool for verl 0.9.1's tool agent loop: a ``verl.tools.base_tool.BaseTool`` over ``CropEnv``.

Imports verl (and so torch): only the verl venv and verl's rollout workers load it, through the tool YAML
(``configs/verl/crop_tool.yaml``, ``actor_rollout_ref.rollout.multi_turn.tool_config_path``)::

    tools:
      - class_name: virl_train.interop.verl_tool.CropTool
        config: {type: native, convention: qwen25_abs_resized}
        tool_schema: {type: function, function: {name: crop, ...}}

One call ``crop(bbox_2d=[x1, y1, x2, y2])`` is one ``CropEnv.step`` of the tool-call text ``{"name": "crop",
"arguments": {...}}``: the box is read in the family's convention (``qwen25_abs_resized``: absolute pixels of the
smart-resized view the model saw; ``qwen3_norm1000``: 0-``scale`` relative), converted to original pixels by
``virl_data.core.boxconv``, grown to ``min_crop``, cut from the ORIGINAL image and resized as the env does. The response
is ``ToolResponse(image=[crop], text=<crop_result>…)``, or the env's ``<crop_error>…`` text alone for an invalid
box. So the tool shows exactly what ``virl-train``'s own rollout shows, and ``compute_score``
(``virl_train.interop.verl``) judges the same actions.

Settings: the tool YAML's ``config`` (defaults), overridden per row by ``create_kwargs``
(``extra_info.tools_kwargs.crop.create_kwargs`` of ``virl-data export --format verl``): the fields of
``virl_data.export.verl.CropSettings``. The original image: ``create_kwargs["image"]`` (bytes, path or PIL image)
when given, else the first image of the trajectory's prompt (``agent_data.messages``, as ``RLHFDataset`` decoded it).

State: verl 0.9.1 runs create → execute → release for every call, so the episode's env (its action budget) is kept
per trajectory, keyed weakly by the ``agent_data`` verl passes to ``execute``; without one (a direct call), per
instance until ``release``. The ``max_actions + 1``-th crop gets the env's ``action_limit`` error, as in the env.
"""

from __future__ import annotations

import dataclasses
import io
import json
import weakref
from typing import Any
from uuid import uuid4

from PIL import Image
from verl.tools.base_tool import BaseTool
from verl.tools.schemas import OpenAIFunctionToolSchema, ToolResponse

from virl_data.core.errors import ConfigError
from virl_data.export.verl import TOOL_NAME, CropSettings
from virl_train.actions import ERRORS
from virl_train.env import ERROR_TEXT, CropEnv

SETTINGS = tuple(f.name for f in dataclasses.fields(CropSettings))


def _as_image(value: Any) -> Image.Image:
    """A PIL image from bytes, ``{"bytes": ...}``, a path or a PIL image."""
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, dict):
        value = value.get("image", value.get("bytes"))
        return _as_image(value)
    if isinstance(value, bytes | bytearray):
        return Image.open(io.BytesIO(value))
    if isinstance(value, str):
        return Image.open(value.removeprefix("file://"))
    raise ConfigError(f"crop tool: cannot read an image from {type(value).__name__}")


def prompt_image(messages: list[dict[str, Any]]) -> Image.Image:
    """The first image of a chat prompt (``{"type": "image", "image": ...}`` content, as ``RLHFDataset`` builds)."""
    for message in messages:
        content = message.get("content")
        for item in content if isinstance(content, list) else ():
            if isinstance(item, dict) and item.get("type") == "image":
                return _as_image(item)
    raise ConfigError("crop tool: the trajectory's prompt has no image and create_kwargs has none either")


class CropTool(BaseTool):
    """verl tool ``crop``: one ``CropEnv`` episode per trajectory (see the module docstring)."""

    def __init__(self, config: dict, tool_schema: OpenAIFunctionToolSchema | None) -> None:
        super().__init__(config, tool_schema)
        unknown = set(config) - set(SETTINGS) - {"type"}
        if unknown:
            raise ConfigError(f"crop tool config: unknown keys {sorted(unknown)}; known: {', '.join(SETTINGS)}")
        self.defaults = {k: v for k, v in config.items() if k in SETTINGS}
        self._created: dict[str, dict[str, Any]] = {}
        self._by_instance: dict[str, CropEnv] = {}
        self._by_trajectory: weakref.WeakKeyDictionary[Any, CropEnv] = weakref.WeakKeyDictionary()

    async def create(self, instance_id: str | None = None, **kwargs: Any) -> tuple[str, ToolResponse]:
        instance_id = instance_id or str(uuid4())
        self._created[instance_id] = dict(kwargs.get("create_kwargs") or {})
        return instance_id, ToolResponse()

    def _new_env(self, created: dict[str, Any], agent_data: Any) -> CropEnv:
        s = CropSettings(**{**self.defaults, **{k: v for k, v in created.items() if k in SETTINGS}})
        env = CropEnv(
            s.convention, fmt="json", max_actions=s.max_actions, min_crop=s.min_crop, max_aspect=s.max_aspect,
            min_pixels=s.min_pixels, max_pixels=s.max_pixels, factor=s.factor, scale=s.scale,
        )  # fmt: skip
        image = created.get("image")
        env.reset(_as_image(image) if image is not None else prompt_image(agent_data.messages), "")
        return env

    def env_for(self, instance_id: str, agent_data: Any = None) -> CropEnv:
        """The env of this call's trajectory (made on its first call)."""
        store: Any = self._by_instance if agent_data is None else self._by_trajectory
        key = instance_id if agent_data is None else agent_data
        if key not in store:
            store[key] = self._new_env(self._created.get(instance_id, {}), agent_data)
        return store[key]

    async def execute(
        self, instance_id: str, parameters: dict[str, Any], **kwargs: Any
    ) -> tuple[ToolResponse, float, dict]:
        env = self.env_for(instance_id, kwargs.get("agent_data"))
        if env.done:  # the budget was spent by an earlier call: the env takes no more actions
            return self._limit(env), 0.0, {"action": "invalid", "error": "action_limit"}
        result = env.step(json.dumps({"name": TOOL_NAME, "arguments": parameters}))
        action, obs = result.action, result.observation
        metrics = {"action": action.kind.value, "error": action.error or ""}
        if obs is None:
            return self._limit(env), 0.0, metrics
        if obs.image is None:  # an invalid box: the env's error text only (ToolResponse refuses image=None)
            return ToolResponse(text=obs.text), 0.0, metrics
        return ToolResponse(text=obs.text, image=[obs.image]), 0.0, metrics

    @staticmethod
    def _limit(env: CropEnv) -> ToolResponse:
        n = len(env.actions)
        return ToolResponse(text=ERROR_TEXT.format(index=n, limit=env.max_actions, reason=ERRORS["action_limit"]))

    async def release(self, instance_id: str, **kwargs: Any) -> None:
        self._created.pop(instance_id, None)
        self._by_instance.pop(instance_id, None)


__all__ = ["CropTool", "prompt_image"]
