"""The two halves of checking answers against openapi/ltvd.yaml, standard
library only: a reader for the YAML the spec is written in, and a checker
for the part of JSON Schema (OpenAPI 3.0 flavour) the spec uses.

load_yaml(text)              -> the document as dicts, lists and scalars
check(value, schema, spec)   -> list of problems ("$.a.b: ..."), [] if none
response_spec(spec, path, method, status) -> the response object that
                                documents that answer (the status's own,
                                else `default`), references resolved

The YAML reader takes block mappings and sequences, flow {..} and [..]
(also over several lines), plain, 'single' and "double" quoted scalars,
`|` and `>` block scalars and comments. Anything else (anchors, tags,
multi-line plain scalars, tabs) is an error rather than a guess. Plain
scalars follow YAML 1.2's core schema: null, true/false, ints, floats.

The checker knows type, nullable, enum, required, properties,
additionalProperties, items, minItems/maxItems, minimum/maximum,
minLength/maxLength, format date-time, oneOf, allOf and $ref; it refuses
any other keyword, so a constraint the spec adds cannot be skipped
silently. With strict=True an object may carry only the properties its
schema names (unless additionalProperties says otherwise): the tests use
it so that every field ltvd sends is documented."""
import re
from datetime import datetime

# ---- YAML ---------------------------------------------------------------


class YamlError(ValueError):
    pass


def _strip_comment(line):
    """line without a trailing comment (a # at the start or after a blank,
    outside quotes)."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"" and (i == 0 or line[i - 1] in " [{,:-"):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


_INT = re.compile(r"^[-+]?[0-9]+$")
_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")


def _plain(text):
    t = text.strip()
    if t in ("", "~", "null", "Null", "NULL"):
        return None
    if t in ("true", "True", "TRUE"):
        return True
    if t in ("false", "False", "FALSE"):
        return False
    if _INT.match(t):
        return int(t)
    if _FLOAT.match(t):
        return float(t)
    if t[0] in "&*!%@`|>":
        raise YamlError(f"unsupported YAML: {t!r}")
    return t


def _quoted(s, i):
    """(string, index after the closing quote) for a quoted scalar at s[i]."""
    q = s[i]
    out, i = [], i + 1
    while i < len(s):
        ch = s[i]
        if q == "'" and ch == "'":
            if s[i + 1:i + 2] == "'":
                out.append("'")
                i += 2
                continue
            return "".join(out), i + 1
        if q == '"' and ch == "\\":
            esc = s[i + 1:i + 2]
            simple = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "/": "/", "r": "\r", "0": "\0"}
            if esc in simple:
                out.append(simple[esc])
                i += 2
                continue
            if esc == "u":
                out.append(chr(int(s[i + 2:i + 6], 16)))
                i += 6
                continue
            raise YamlError(f"unsupported escape \\{esc}")
        if q == '"' and ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise YamlError(f"unterminated quote in {s!r}")


def _flow(s, i):
    """(value, index after it) for a flow value starting at s[i]."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        raise YamlError(f"flow value missing in {s!r}")
    ch = s[i]
    if ch in "'\"":
        return _quoted(s, i)
    if ch == "[":
        items, i = [], i + 1
        while True:
            while i < len(s) and s[i] == " ":
                i += 1
            if s[i] == "]":
                return items, i + 1
            v, i = _flow(s, i)
            items.append(v)
            while s[i] == " ":
                i += 1
            if s[i] == ",":
                i += 1
            elif s[i] != "]":
                raise YamlError(f"expected , or ] at {i} in {s!r}")
    if ch == "{":
        out, i = {}, i + 1
        while True:
            while i < len(s) and s[i] == " ":
                i += 1
            if s[i] == "}":
                return out, i + 1
            if s[i] in "'\"":
                key, i = _quoted(s, i)
            else:
                m = re.compile(r"[^:,{}\[\]]+").match(s, i)
                if not m:
                    raise YamlError(f"flow key expected at {i} in {s!r}")
                key, i = _plain(m.group(0)), m.end()
            while s[i] == " ":
                i += 1
            if s[i] != ":":
                raise YamlError(f"expected : after {key!r} in {s!r}")
            v, i = _flow(s, i + 1)
            if key in out:
                raise YamlError(f"duplicate key {key!r}")
            out[key] = v
            while s[i] == " ":
                i += 1
            if s[i] == ",":
                i += 1
            elif s[i] != "}":
                raise YamlError(f"expected , or }} at {i} in {s!r}")
    m = re.compile(r"[^,{}\[\]]+").match(s, i)
    text = m.group(0)
    if ": " in text or text.endswith(":"):
        raise YamlError(f"a plain flow scalar holds ': ' (quote it): {text!r}")
    return _plain(text), m.end()


class _Lines:
    def __init__(self, text):
        self.items = []  # (indent, content, raw line)
        for raw in text.split("\n"):
            if "\t" in raw[:len(raw) - len(raw.lstrip())]:
                raise YamlError(f"tab in indentation: {raw!r}")
            self.items.append(raw)
        self.pos = 0

    def next_content(self):
        """Index of the next line with content (comments stripped), or None."""
        i = self.pos
        while i < len(self.items):
            c = _strip_comment(self.items[i])
            if c.strip() and c.strip() != "---":
                return i
            i += 1
        return None


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def _split_key(content):
    """(key, rest) if content is `key: rest` or `key:`, else None."""
    if content[0] in "'\"":
        key, i = _quoted(content, 0)
    else:
        m = re.match(r"([^\s'\"\[\]{},#][^:#]*?)\s*:(\s|$)", content)
        if not m:
            return None
        key, i = _plain(m.group(1)), m.end(1)
    rest = content[i:].lstrip()
    if not rest.startswith(":"):
        return None
    return key, rest[1:].strip()


def _value(L, rest, indent):
    """The value after `key:` or `- ` whose line has this indent."""
    if rest == "":
        j = L.next_content()
        if j is None:
            return None
        ind = _indent(L.items[j])
        line = _strip_comment(L.items[j]).strip()
        if ind > indent or (ind == indent and (line == "-" or line.startswith("- "))):
            return _block(L, ind)
        return None
    if rest[0] in "|>":
        return _block_scalar(L, rest, indent)
    if rest[0] in "[{":
        text = rest
        while True:
            try:
                v, end = _flow(text, 0)
                break
            except (IndexError, YamlError):
                if L.pos >= len(L.items):
                    raise YamlError(f"unterminated flow collection: {rest!r}")
                text += " " + _strip_comment(L.items[L.pos]).strip()
                L.pos += 1
        if text[end:].strip():
            raise YamlError(f"text after a flow collection: {text!r}")
        return v
    if rest[0] in "'\"":
        v, end = _quoted(rest, 0)
        if rest[end:].strip():
            raise YamlError(f"text after a quoted scalar: {rest!r}")
        return v
    j = L.next_content()
    if j is not None and _indent(L.items[j]) > indent and not _strip_comment(L.items[j]).strip().startswith("- "):
        raise YamlError(f"multi-line plain scalars are not supported: {rest!r}")
    return _plain(rest)


def _block_scalar(L, header, indent):
    if header not in ("|", "|-", ">", ">-"):
        raise YamlError(f"unsupported block scalar header {header!r}")
    lines = []
    while L.pos < len(L.items):
        raw = L.items[L.pos]
        if raw.strip() and _indent(raw) <= indent:
            break
        lines.append(raw)
        L.pos += 1
    while lines and not lines[-1].strip():
        lines.pop()
    body = [ln for ln in lines if ln.strip()]
    if not body:
        return ""
    cut = min(_indent(ln) for ln in body)
    text_lines = [ln[cut:] for ln in lines]
    if header[0] == "|":
        text = "\n".join(text_lines)
    else:
        text, prev_blank = "", True
        for ln in text_lines:
            if not ln.strip():
                text += "\n"
                prev_blank = True
            else:
                text += ("" if prev_blank else " ") + ln
                prev_blank = False
    return text if header.endswith("-") else text + "\n"


def _block(L, indent):
    j = L.next_content()
    first = _strip_comment(L.items[j]).strip()
    if first == "-" or first.startswith("- "):
        return _sequence(L, indent)
    return _mapping(L, indent)


def _mapping(L, indent):
    out = {}
    while True:
        j = L.next_content()
        if j is None:
            return out
        line = _strip_comment(L.items[j])
        ind = _indent(line)
        if ind < indent:
            return out
        if ind > indent:
            raise YamlError(f"line {j + 1}: unexpected indentation: {line!r}")
        content = line.strip()
        if content.startswith("- "):
            return out
        kv = _split_key(content)
        if kv is None:
            raise YamlError(f"line {j + 1}: expected `key: value`: {line!r}")
        L.pos = j + 1
        key, rest = kv
        if key in out:
            raise YamlError(f"line {j + 1}: duplicate key {key!r}")
        out[key] = _value(L, rest, indent)


def _sequence(L, indent):
    out = []
    while True:
        j = L.next_content()
        if j is None:
            return out
        line = _strip_comment(L.items[j])
        ind = _indent(line)
        content = line.strip()
        if ind != indent or not (content == "-" or content.startswith("- ")):
            if ind > indent:
                raise YamlError(f"line {j + 1}: unexpected indentation: {line!r}")
            return out
        rest = content[1:].strip()
        L.pos = j + 1
        if rest and rest[0] not in "'\"[{" and _split_key(rest):
            # `- key: value`: a mapping whose keys sit at the column of `key`
            col = ind + len(content) - len(rest)
            L.items[j] = " " * col + rest
            L.pos = j
            out.append(_mapping(L, col))
        else:
            out.append(_value(L, rest, ind))


def load_yaml(text):
    L = _Lines(text)
    j = L.next_content()
    if j is None:
        return None
    doc = _block(L, _indent(L.items[j]))
    if L.next_content() is not None:
        k = L.next_content()
        raise YamlError(f"line {k + 1}: not read: {L.items[k]!r}")
    return doc


# ---- JSON Schema (OpenAPI 3.0 subset) -------------------------------------

ANNOTATIONS = {"description", "example", "title", "deprecated", "externalDocs", "readOnly", "writeOnly"}
CHECKED = {"$ref", "type", "nullable", "enum", "required", "properties", "additionalProperties", "items",
           "minItems", "maxItems", "minimum", "maximum", "minLength", "maxLength", "pattern", "format", "oneOf",
           "allOf"}
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def resolve(spec, node):
    """node with its $ref (a local '#/...' pointer) followed, repeatedly."""
    seen = 0
    while isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $ref supported: {ref}")
        node = spec
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        seen += 1
        if seen > 50:
            raise ValueError(f"$ref loop at {ref}")
    return node


def _merge_all_of(spec, schemas):
    """One schema equal to allOf(schemas) for the keywords used here:
    required and properties are joined (a property named twice becomes an
    allOf of both), enums intersected, anything else must agree."""
    out = {}
    for s in schemas:
        s = resolve(spec, s)
        if "allOf" in s:
            s = dict(_merge_all_of(spec, s["allOf"]), **{k: v for k, v in s.items() if k != "allOf"})
        for k, v in s.items():
            if k in ANNOTATIONS:
                continue
            if k not in out:
                out[k] = v
            elif k == "required":
                out[k] = list(dict.fromkeys(out[k] + v))
            elif k == "properties":
                props = dict(out[k])
                for name, ps in v.items():
                    props[name] = {"allOf": [props[name], ps]} if name in props else ps
                out[k] = props
            elif k == "enum":
                out[k] = [x for x in out[k] if x in v]
            elif out[k] != v:
                raise ValueError(f"allOf branches disagree on {k}: {out[k]!r} vs {v!r}")
    return out


def _type_ok(value, t):
    if t == "object":
        return isinstance(value, dict)
    if t == "array":
        return isinstance(value, list)
    if t == "string":
        return isinstance(value, str)
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise ValueError(f"unknown type {t!r}")


def check(value, schema, spec, path="$", strict=False):
    """Problems with value against schema, as a list of strings."""
    schema = resolve(spec, schema)
    if "allOf" in schema:
        schema = _merge_all_of(spec, [{k: v for k, v in schema.items() if k != "allOf"}] + schema["allOf"])
    unknown = set(schema) - CHECKED - ANNOTATIONS
    if unknown:
        raise ValueError(f"{path}: the checker does not know {sorted(unknown)}")
    if value is None:
        return [] if schema.get("nullable") else [f"{path}: null, and the schema is not nullable"]
    if "oneOf" in schema:
        matches = [b for b in schema["oneOf"] if not check(value, b, spec, path, strict)]
        if len(matches) != 1:
            return [f"{path}: matches {len(matches)} of the oneOf branches, not exactly one: {value!r}"]
    problems = []
    t = schema.get("type")
    if t and not _type_ok(value, t):
        return [f"{path}: {type(value).__name__} {value!r:.80}, wanted {t}"]
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            problems.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            problems.append(f"{path}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{path}: {value!r:.80} does not match {schema['pattern']!r}")
        fmt = schema.get("format")
        if fmt == "date-time":
            ok = bool(RFC3339.match(value))
            if ok:
                try:
                    datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00").replace(" ", "T"))
                except ValueError:
                    ok = False
            if not ok:
                problems.append(f"{path}: {value!r} is not an RFC 3339 date-time")
        elif fmt == "binary":
            pass  # any bytes (an octet-stream body, read as latin-1 text)
        elif fmt is not None:
            raise ValueError(f"{path}: the checker does not know format {fmt!r}")
    if isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            problems.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            problems.append(f"{path}: more than {schema['maxItems']} items")
        if "items" in schema:
            for i, item in enumerate(value):
                problems += check(item, schema["items"], spec, f"{path}[{i}]", strict)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            if name not in value:
                problems.append(f"{path}: required property {name!r} is missing")
        declared = "properties" in schema or schema.get("type") == "object"
        extra = schema.get("additionalProperties", not (strict and declared))
        for name, v in value.items():
            if name in props:
                problems += check(v, props[name], spec, f"{path}.{name}", strict)
            elif extra is False:
                problems.append(f"{path}: property {name!r} is not in the schema")
            elif isinstance(extra, dict):
                problems += check(v, extra, spec, f"{path}.{name}", strict)
    return problems


def response_spec(spec, path, method, status):
    """The response object documenting `status` for the operation, or None."""
    op = spec["paths"][path][method.lower()]
    responses = op["responses"]
    resp = responses.get(str(status), responses.get("default"))
    return resolve(spec, resp) if resp is not None else None


def header_problems(spec, resp, headers):
    """What is wrong with an answer's headers ({lower-case name: value})
    against its response object resp: a required header missing, or a value
    its schema refuses."""
    problems = []
    for name, h in (resp.get("headers") or {}).items():
        h = resolve(spec, h)
        value = headers.get(name.lower())
        if value is not None:
            problems += check(value, h["schema"], spec, f"header {name}")
        elif h.get("required"):
            problems.append(f"header {name} missing")
    return problems
