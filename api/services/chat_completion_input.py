"""An OpenAI chat-completions request, read into a turn: messages whose content is a string or a
list of text parts, the sampling parameters the models can honour, and a clear 400
(`unsupported_parameter`, naming it) for everything else. Nothing a client asks for is ignored."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

import jsonschema
import referencing.exceptions
from pydantic import BaseModel, ConfigDict, Field

from activities.adapters.model_registry import ModelRegistry
from activities.contracts.sampling import NamedToolChoice, ResponseFormat, Sampling, Tool, ToolChoice
from activities.contracts.turn import Message
from api.core.errors import ApiError
from api.core.text_fields import StorableStr


class ImageUrl(BaseModel):
    url: str = Field(pattern=r"^(https?://|data:image/(png|jpeg|gif|webp);base64,)")
    detail: Literal["auto", "low", "high"] | None = None


class ContentPart(BaseModel):
    """A part of a message's content: text; images for models that declare vision; any other kind
    (audio, files) is refused."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(max_length=40)
    text: StorableStr | None = None
    image_url: ImageUrl | None = None


# What a request's images may weigh in all: they travel in the turn's Temporal input (2 MB a payload).
MAX_IMAGE_CHARS = 1_000_000
MAX_IMAGES = 8


class FunctionCall(BaseModel):
    name: str = Field(max_length=64)
    arguments: StorableStr = ""


class AssistantToolCall(BaseModel):
    """A tool call of an earlier reply, as the client sends it back."""

    id: str = Field(min_length=1, max_length=200)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    # `developer` is what newer OpenAI clients call the system message.
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StorableStr | list[ContentPart] | None = None
    name: str | None = Field(default=None, max_length=64)
    # An assistant's calls (earlier replies), and which call a `tool` message answers.
    tool_calls: list[AssistantToolCall] | None = None
    tool_call_id: str | None = Field(default=None, max_length=200)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    # Fields this model does not name are kept, to be refused by name (not dropped in silence).
    model_config = ConfigDict(extra="allow")

    model: StorableStr | None = Field(default=None, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=4096)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=4096)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    # Recorded as the conversation's end user (OpenAI: "a unique identifier for your end-user").
    user: str | None = Field(default=None, max_length=200)
    n: int | None = Field(default=None, ge=1, le=8)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: ToolChoice | None = None
    # True is OpenAI's default (the model may call several tools at once); False cannot be enforced.
    parallel_tool_calls: bool | None = None


def unsupported(param: str, message: str) -> ApiError:
    return ApiError(400, message, code="unsupported_parameter", param=param)


def _empty(value: object) -> bool:
    # What clients send back of a reply they were given (`"refusal": null`, `"tool_calls": []`).
    return value is None or value == [] or value == {} or value == ""


def _content_of(index: int, message: ChatMessage) -> tuple[str, list[Message]]:
    """The message's text, and its image parts (OpenAI's shape) in order."""
    for field, value in (message.model_extra or {}).items():
        if not _empty(value):
            why = "deprecated: send tools and tool_calls" if field == "function_call" else "unknown"
            raise unsupported(f"messages[{index}].{field}", f"messages[{index}].{field}: {why}")
    if message.content is None:
        if message.tool_calls:
            return "", []
        raise unsupported(f"messages[{index}].content", f"messages[{index}] has no content")
    if isinstance(message.content, str):
        return message.content, []
    texts, images = [], []
    for j, part in enumerate(message.content):
        if part.type == "text" and part.text is not None:
            texts.append(part.text)
        elif part.type == "image_url" and part.image_url is not None and message.role == "user":
            images.append({"type": "image_url", "image_url": part.image_url.model_dump(exclude_none=True)})
        else:
            raise unsupported(
                f"messages[{index}].content[{j}].type",
                f"messages[{index}].content[{j}]: {part.type!r} parts are not taken here; send text"
                " parts (and image_url parts in user messages, for a model that declares vision)",
            )
    return "\n".join(texts), images


def _as_message(index: int, message: ChatMessage, calls_made: set[str]) -> tuple[Message, str, list[Message]]:
    """The message as the model server takes it (with its images), its text and its images; a tool
    result must answer a call made before it."""
    role = "system" if message.role == "developer" else message.role
    text, images = _content_of(index, message)
    out: Message = {"role": role, "content": [{"type": "text", "text": text}, *images] if images else text}
    if message.tool_calls:
        if role != "assistant":
            raise ApiError(
                400,
                f"messages[{index}]: only assistant messages carry tool_calls",
                code="invalid_message",
                param=f"messages[{index}].tool_calls",
            )
        out["tool_calls"] = [c.model_dump(mode="json") for c in message.tool_calls]
        out["content"] = out["content"] or None
        calls_made.update(c.id for c in message.tool_calls)
    if role == "tool":
        if message.tool_call_id not in calls_made:
            raise ApiError(
                400,
                f"messages[{index}]: a tool message answers a tool call of an earlier assistant message"
                f" (tool_call_id {message.tool_call_id!r} is none of them)",
                code="invalid_tool_call_id",
                param=f"messages[{index}].tool_call_id",
            )
        out["tool_call_id"] = message.tool_call_id
    return out, text, images


@dataclass(frozen=True)
class ReadMessages:
    """A request's messages: the history before the last user message, its text and images, and
    what came after it (the model's tool calls and the client's results), which the reply answers."""

    history: list[Message]
    text: str
    images: list[Message] | None
    tool_exchange: list[Message] | None


def read_messages(body: ChatCompletionRequest, registry: ModelRegistry) -> ReadMessages:
    calls_made: set[str] = set()
    read = [_as_message(i, m, calls_made) for i, m in enumerate(body.messages)]
    messages = [m for m, _, _ in read]
    users = [i for i, m in enumerate(messages) if m["role"] == "user"]
    after = messages[users[-1] + 1 :] if users else []
    if not users or (after and after[-1]["role"] != "tool"):
        raise ApiError(
            422,
            "the last message must have role 'user', or 'tool' (the results of the reply's tool calls)",
            code="422",
        )
    if any(m["role"] == "assistant" and not m.get("tool_calls") for m in after):
        raise ApiError(422, "after the last user message come only tool calls and their results", code="422")
    _check_images(body, [images for _, _, images in read], registry)
    last = users[-1]
    _, text, images = read[last]
    return ReadMessages(messages[:last], text, images or None, after or None)


def _check_images(body: ChatCompletionRequest, images: list[list[Message]], registry: ModelRegistry) -> None:
    """Images only for models that declare vision (every model that may answer), within bounds."""
    found = [(i, parts) for i, parts in enumerate(images) if parts]
    if not found:
        return
    index = found[0][0]
    param = f"messages[{index}].content"
    for name in _candidates(body.model, registry):
        if not registry.models[name].vision:
            raise unsupported(
                param, f"messages[{index}] has images, and the model {name} does not declare vision"
            )
    every = [part for _, parts in found for part in parts]
    if len(every) > MAX_IMAGES:
        raise ApiError(400, f"at most {MAX_IMAGES} images a request", code="too_many_images", param=param)
    if sum(len(p["image_url"]["url"]) for p in every) > MAX_IMAGE_CHARS:
        raise ApiError(
            413,
            f"the images weigh more than {MAX_IMAGE_CHARS} characters of URL: link them (https) instead",
            code="images_too_large",
            param=param,
        )


def read_sampling(body: ChatCompletionRequest, registry: ModelRegistry) -> Sampling | None:
    """The request's sampling, refused (400) when a model that may answer it cannot honour it."""
    for name, value in (body.model_extra or {}).items():
        if not _empty(value):
            raise unsupported(name, f"`{name}` is not supported")
    if body.n not in (None, 1):
        raise unsupported("n", "only one choice per request (`n` = 1)")
    if body.parallel_tool_calls is False:
        raise unsupported("parallel_tool_calls", "a model here may always call several tools at once")
    _check_tools(body)
    sampling = Sampling(
        stop=[body.stop] if isinstance(body.stop, str) else body.stop,
        top_p=body.top_p,
        seed=body.seed,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        response_format=body.response_format,
        tools=body.tools or None,
        tool_choice=body.tool_choice if body.tools else None,
    )
    if body.response_format is not None and (schema := body.response_format.schema_) is not None:
        _check_schema(schema, "response_format.json_schema.schema")
    asked = sampling.asked()
    if not asked:
        return None
    wants_schema = sampling.response_format is not None and sampling.response_format.type == "json_schema"
    for name in _candidates(body.model, registry):
        adapter = registry.adapter(name)
        lacking = [p for p in asked if p not in adapter.parameters]
        if lacking:
            raise unsupported(lacking[0], f"the model {name} cannot take `{lacking[0]}`")
        if wants_schema and not adapter.follows_schemas:
            raise unsupported(
                "response_format",
                f"the model {name} cannot constrain its output to a JSON schema here (`json_object` works)",
            )
    return sampling


def _check_schema(schema: dict[str, object], param: str) -> None:
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ApiError(
            400, f"{param} is not a JSON Schema: {exc.message}", code="invalid_schema", param=param
        ) from None


def _check_tools(body: ChatCompletionRequest) -> None:
    names = [t.function.name for t in body.tools or []]
    if len(set(names)) < len(names):
        raise ApiError(400, "two tools have the same name", code="invalid_tools", param="tools")
    for i, tool in enumerate(body.tools or []):
        if tool.function.parameters is not None:
            _check_schema(tool.function.parameters, f"tools[{i}].function.parameters")
    choice = body.tool_choice
    if choice not in (None, "none", "auto") and not names:
        raise ApiError(
            400,
            "tool_choice asks for a tool call, and no tools are given",
            code="invalid_tool_choice",
            param="tool_choice",
        )
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise ApiError(
            400,
            f"tool_choice names {choice.function.name!r}, which is not among the tools",
            code="invalid_tool_choice",
            param="tool_choice",
        )


def _candidates(model: str | None, registry: ModelRegistry) -> list[str]:
    """Every model that may answer: the one named and its fallbacks, or (routing chooses) them all."""
    models = registry.models
    if model not in models:
        return list(models)
    seen, todo = [], [model]
    while todo:
        name = todo.pop(0)
        if name in models and name not in seen:
            seen.append(name)
            todo.extend(models[name].fallback)
            todo.extend(n for n, spec in models.items() if spec.canary_of == name)
    return seen


def output_problem(fmt: ResponseFormat | None, text: str, finish_reason: str | None) -> str | None:
    """Why a reply does not satisfy its `response_format`, or None. A reply cut at max_tokens is
    left as it is (`finish_reason: length` says so, as OpenAI's does)."""
    if fmt is None or fmt.type == "text" or finish_reason in ("length", "tool_calls"):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        return f"the model's reply is not JSON ({exc.msg} at character {exc.pos})"
    if fmt.schema_ is not None:
        try:
            error = jsonschema.exceptions.best_match(
                jsonschema.Draft202012Validator(fmt.schema_).iter_errors(value)
            )
        except referencing.exceptions.Unresolvable as exc:  # a $ref outside the schema: never fetched
            return f"the schema's reference {exc} cannot be resolved here"
        if error is not None:
            return f"the model's reply does not match the schema: {error.message}"
    elif not isinstance(value, dict):
        return "the model's reply is JSON but not an object"
    return None
