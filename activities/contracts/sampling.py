"""What a request asks of the model beyond length and temperature, in OpenAI's names. Each model
adapter spells it for its own server (activities/adapters/model_adapters.py); it is part of the
turn's recorded input, so compliance replay shows it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class JsonSchemaFormat(BaseModel):
    """OpenAI's `response_format.json_schema`: a name, the schema, and whether it is strict."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, serialize_by_alias=True)

    name: str = Field(default="response", max_length=64)
    description: str | None = None
    # `schema` would shadow BaseModel.schema: the wire name is an alias.
    json_schema: dict[str, Any] = Field(alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_with_its_type(self) -> ResponseFormat:
        if (self.type == "json_schema") != (self.json_schema is not None):
            raise ValueError("json_schema is given with type 'json_schema', and only then")
        return self

    @property
    def schema_(self) -> dict[str, Any] | None:
        return self.json_schema.json_schema if self.json_schema else None


class FunctionSpec(BaseModel):
    """A tool the model may call: OpenAI's `tools[].function`."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = Field(default=None, max_length=4000)
    # A JSON Schema for the arguments (checked by the API, as response_format's is).
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: Literal["function"] = "function"
    function: FunctionSpec


class NamedFunction(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = Field(max_length=64)


class NamedToolChoice(BaseModel):
    """`tool_choice: {"type": "function", "function": {"name": ...}}`: this tool, always."""

    model_config = ConfigDict(frozen=True)

    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ToolCall(BaseModel):
    """A call the model made: an id, the tool's name and its arguments (a JSON text, as OpenAI's)."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: str = ""

    def as_openai(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


class Sampling(BaseModel):
    """None means the model's own default (temporal.yaml `params`)."""

    model_config = ConfigDict(frozen=True)

    stop: list[str] | None = Field(default=None, max_length=4)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = Field(default=None, max_length=128)
    tool_choice: ToolChoice | None = None

    @property
    def tool_names(self) -> list[str]:
        return [t.function.name for t in self.tools or []]

    def asked(self) -> list[str]:
        """The parameters this request sets (plain text output is no request at all)."""
        set_ = [name for name in type(self).model_fields if getattr(self, name) is not None]
        if self.response_format is not None and self.response_format.type == "text":
            set_.remove("response_format")
        return set_

    @property
    def wants_json(self) -> bool:
        return self.response_format is not None and self.response_format.type != "text"
