"""Offline schema checks of rendered Kubernetes manifests, for tests/test_helm_chart.py.

Core kinds (Deployment, Service, ...) go to ``kubernetes-validate`` (the upstream OpenAPI
schemas of each Kubernetes version, shipped inside the package: no network) in strict mode, where a
field the schema does not know is an error.

Custom resources (KubeRay's ``RayCluster`` / ``RayJob``) go to the ``openAPIV3Schema`` of their
CustomResourceDefinition, turned into a JSON Schema for ``jsonschema`` as the API server reads it:

- OpenAPI 3.0 keywords are JSON Schema draft 4 ones (boolean ``exclusiveMinimum``): a Draft4
  validator; ``nullable: true`` allows null; ``format: int32/int64`` are range-checked.
- ``x-kubernetes-int-or-string``: an integer or a string (controller-gen also writes the ``anyOf``).
- ``x-kubernetes-list-type: set`` / ``map`` (+ ``x-kubernetes-list-map-keys``): duplicates are
  refused, as the API server refuses them (a missing key takes the item schema's default).
- ``x-kubernetes-preserve-unknown-fields`` keeps unknown fields; ``x-kubernetes-embedded-resource``
  adds apiVersion/kind/metadata; ``x-kubernetes-map-type`` changes nothing for one object.
- Unknown fields: a structural schema makes the API server *prune* fields it does not know, silently
  (a misspelled ``nodeSelecter`` is dropped and the pod lands anywhere). Here they are *errors*:
  every object without ``additionalProperties`` or ``x-kubernetes-preserve-unknown-fields`` gets
  ``additionalProperties: false``. The one exception is the root ``metadata``, which the API server
  checks as an ObjectMeta whatever the CRD says: it is checked against the core ObjectMeta schema.
- ``x-kubernetes-validations`` (CEL rules) are not evaluated: a manifest that sets a field carrying
  one is refused with the rules, so a chart that starts using such a field fails loudly here
  instead of being passed unchecked.
- Any other keyword or extension in the CRD fails the load (a newer CRD with a feature this
  converter does not know cannot pass vacuously).

Neither schema holds every rule a real cluster applies. Two small sets of those rules that the
chart's names and ports can break are checked here as well, by hand, each citing its source:
``api_server_errors`` (Service names are DNS-1035 labels, label syntax, port names) and
``kuberay_operator_errors`` (KubeRay's ``ValidateRayClusterMetadata`` / ``ValidateRayClusterSpec``:
a RayCluster name of at most 53 characters that is a DNS-1035 label, min/max replicas). The
operator's checks run when it reconciles, after the API server has accepted the object: a
RayCluster that breaks them is stored and then never gets a pod, with only a Warning event.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

__all__ = [
    "CrdValidator",
    "api_server_errors",
    "core_errors",
    "kuberay_operator_errors",
    "kubernetes_schema_versions",
]


def kubernetes_schema_versions() -> list[str]:
    """The Kubernetes versions whose schemas the installed kubernetes-validate ships."""
    return sorted(
        set(kubernetes_validate.utils.all_versions()),
        key=lambda v: tuple(int(p) for p in v.split(".")),
    )


def core_errors(doc: dict[str, Any], version: str) -> list[str]:
    """What strict kubernetes-validate finds wrong with one core-kind manifest (empty: valid)."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(map(str, e.absolute_path)) or "<root>"
        return [f"{path}: {e.message}"]
    except kubernetes_validate.utils.SchemaNotFoundError as e:
        return [e.message]
    return []


# -- CRDs -----------------------------------------------------------------------------------------

# every keyword that may appear in a schema node, and where it is handled
_JSON_SCHEMA_KEYWORDS = {
    # plain JSON Schema draft 4 (OpenAPI 3.0's subset): jsonschema's Draft4Validator checks them
    "type", "properties", "items", "additionalProperties", "required", "enum", "pattern",
    "maxLength", "minLength", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minItems", "maxItems", "uniqueItems", "minProperties", "maxProperties", "anyOf", "allOf",
    "oneOf", "not", "multipleOf",
    # annotations only
    "description", "title", "default", "example",
    # converted below
    "format", "nullable",
}  # fmt: skip
_EXTENSIONS = {
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-validations",
}
_CEL = "x-scopeflow-cel-rules"  # where a node's CEL rules are kept for the check


def _convert(node: dict[str, Any], path: str, cel: list[str]) -> dict[str, Any]:
    unknown = set(node) - _JSON_SCHEMA_KEYWORDS - _EXTENSIONS
    if unknown:
        raise ValueError(f"{path or '<root>'}: schema keywords this converter does not know: "
                         f"{sorted(unknown)}")  # fmt: skip
    out = {k: v for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if "properties" in node:
        out["properties"] = {
            name: _convert(sub, f"{path}.{name}", cel) for name, sub in node["properties"].items()
        }
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _convert(node["additionalProperties"], f"{path}.*", cel)
    if "items" in node:
        out["items"] = _convert(node["items"], f"{path}[]", cel)
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            out[key] = [_convert(sub, path, cel) for sub in node[key]]
    if "not" in node:
        out["not"] = _convert(node["not"], path, cel)

    if node.get("x-kubernetes-int-or-string"):
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("x-kubernetes-embedded-resource"):
        props = out.setdefault("properties", {})
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        props.setdefault("metadata", {"type": "object"})
    is_object = node.get("type") == "object" or "properties" in node
    if (
        is_object
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False  # the API server would prune: refuse instead
    list_type = node.get("x-kubernetes-list-type")
    if list_type == "set":
        out["uniqueItems"] = True
    elif list_type == "map":
        keys = node.get("x-kubernetes-list-map-keys")
        if not keys:
            raise ValueError(f"{path}: x-kubernetes-list-type map without list-map-keys")
        item_props = node.get("items", {}).get("properties", {})
        out["x-list-map-keys"] = {k: item_props.get(k, {}).get("default") for k in keys}
    elif list_type not in (None, "atomic"):
        raise ValueError(f"{path}: unknown x-kubernetes-list-type {list_type!r}")
    if rules := node.get("x-kubernetes-validations"):
        out[_CEL] = [f"{r['rule']} ({r.get('message', '')})" for r in rules]
        cel.append(path)
    if node.get("nullable"):
        del out["nullable"]
        return {"anyOf": [{"type": "null"}, out]}
    return out


def _list_map_keys(
    validator: Any, keys: dict[str, Any], instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    if not isinstance(instance, list):
        return
    seen: dict[tuple[str, ...], int] = {}
    for i, item in enumerate(instance):
        if not isinstance(item, dict):
            continue
        values = {k: item.get(k, default) for k, default in keys.items()}
        key = tuple(json.dumps(v, sort_keys=True) for v in values.values())
        if key in seen:
            yield jsonschema.ValidationError(
                f"items {seen[key]} and {i} have the same list-map key {values} "
                f"(the API server refuses duplicates)"
            )
        seen.setdefault(key, i)


def _cel_rules(
    validator: Any, rules: list[str], instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    yield jsonschema.ValidationError(
        f"sets a field with CEL rules (x-kubernetes-validations) that this check does not "
        f"evaluate: {rules}; check them by hand and extend tests/_k8s_schemas.py"
    )


_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("int32")
def _int32(value: object) -> bool:
    return not isinstance(value, int) or -(2**31) <= value < 2**31


@_FORMATS.checks("int64")
def _int64(value: object) -> bool:
    return not isinstance(value, int) or -(2**63) <= value < 2**63


_CrdDraft = jsonschema.validators.extend(
    jsonschema.Draft4Validator, {"x-list-map-keys": _list_map_keys, _CEL: _cel_rules}
)


class CrdValidator:
    """One served version of a CRD's openAPIV3Schema, as a strict JSON Schema validator."""

    @classmethod
    def from_file(cls, crd_file: Path, version: str) -> CrdValidator:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # 1-2 MB files: libyaml if there
        return cls(yaml.load(crd_file.read_text(), Loader=loader), version)

    def __init__(self, crd: dict[str, Any], version: str) -> None:
        if crd.get("kind") != "CustomResourceDefinition":
            raise ValueError(f"not a CustomResourceDefinition: {crd.get('kind')}")
        self.group = crd["spec"]["group"]
        self.kind = crd["spec"]["names"]["kind"]
        self.api_version = f"{self.group}/{version}"
        entries = {v["name"]: v for v in crd["spec"]["versions"]}
        if version not in entries:
            raise ValueError(
                f"{crd['metadata']['name']} has no version {version}: {sorted(entries)}"
            )
        entry = entries[version]
        if not entry.get("served") or entry.get("deprecated"):
            raise ValueError(f"{self.api_version} {self.kind} is not served, or deprecated")
        self.storage = bool(entry.get("storage"))
        self.cel_paths: list[str] = []
        self.schema = _convert(entry["schema"]["openAPIV3Schema"], "", self.cel_paths)
        # the root metadata is an ObjectMeta whatever the CRD says: checked on its own, below
        self.schema["properties"]["metadata"] = {"type": "object"}
        _CrdDraft.check_schema(self.schema)
        self._validator = _CrdDraft(self.schema, format_checker=_FORMATS)

    def errors(self, doc: dict[str, Any], kubernetes_version: str) -> list[str]:
        """Everything wrong with this manifest (empty: valid)."""
        if (doc.get("apiVersion"), doc.get("kind")) != (self.api_version, self.kind):
            return [
                f"not a {self.api_version} {self.kind}: {doc.get('apiVersion')} {doc.get('kind')}"
            ]
        found = [
            f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in self._validator.iter_errors(doc)
        ]
        # ObjectMeta as the API server checks it: borrow a ConfigMap's, strict
        meta = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.get("metadata", {})}
        found += core_errors(meta, kubernetes_version)
        return found


# -- rules beyond the schemas ---------------------------------------------------------------------

# k8s.io/apimachinery/pkg/util/validation: IsDNS1035Label, IsQualifiedName, IsValidLabelValue,
# IsValidPortName (IANA_SVC_NAME)
_DNS1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_QUALIFIED = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")


def _dns1035(name: object) -> list[str]:
    if not isinstance(name, str) or len(name) > 63 or not _DNS1035.fullmatch(name):
        return [f"{name!r} is not a DNS-1035 label (a-z, 0-9, '-', starting with a letter, <= 63)"]
    return []


def _label_errors(where: str, labels: object) -> list[str]:
    errors = []
    for key, value in (labels or {}).items() if isinstance(labels, dict) else []:
        prefix, _, name = key.rpartition("/")
        if (
            len(name) > 63
            or not _QUALIFIED.fullmatch(name)
            or (prefix and (len(prefix) > 253 or not _DNS1123_SUBDOMAIN.fullmatch(prefix)))
        ):
            errors.append(f"{where}: label key {key!r} is not a qualified name")
        if not isinstance(value, str) or (
            value and (len(value) > 63 or not _QUALIFIED.fullmatch(value))
        ):
            errors.append(f"{where}: label {key}={value!r} is not a valid label value")
    return errors


def _port_name_errors(where: str, name: object) -> list[str]:
    if name is None or isinstance(name, int):
        return []
    if (
        not isinstance(name, str)
        or len(name) > 15
        or not _PORT_NAME.fullmatch(name)
        or "--" in name
        or not re.search("[a-z]", name)
    ):
        return [f"{where}: port name {name!r} is not an IANA_SVC_NAME (<= 15 of a-z0-9-)"]
    return []


def _pod_templates(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    spec = doc.get("spec", {})
    if "template" in spec:
        yield "spec.template", spec["template"]
    if "headGroupSpec" in spec:
        yield "spec.headGroupSpec.template", spec["headGroupSpec"].get("template", {})
    for i, group in enumerate(spec.get("workerGroupSpecs", [])):
        yield f"spec.workerGroupSpecs.{i}.template", group.get("template", {})


def api_server_errors(doc: dict[str, Any]) -> list[str]:
    """Rules of the API server's own validation (k8s.io/kubernetes/pkg/apis/core/validation) that
    the OpenAPI schemas do not carry, for what this chart renders: Service names are DNS-1035
    labels (ValidateServiceName), labels and selectors have the label syntax, container and Service
    port names are IANA service names."""
    errors = []
    meta = doc.get("metadata", {})
    if doc.get("kind") == "Service":
        errors += [f"metadata.name: {e}" for e in _dns1035(meta.get("name"))]
        for i, port in enumerate(doc.get("spec", {}).get("ports", [])):
            errors += _port_name_errors(f"spec.ports.{i}.name", port.get("name"))
            if isinstance(port.get("targetPort"), str):
                errors += _port_name_errors(f"spec.ports.{i}.targetPort", port["targetPort"])
        errors += _label_errors("spec.selector", doc.get("spec", {}).get("selector"))
    errors += _label_errors("metadata.labels", meta.get("labels"))
    selector = doc.get("spec", {}).get("selector")
    if isinstance(selector, dict) and "matchLabels" in selector:
        errors += _label_errors("spec.selector.matchLabels", selector["matchLabels"])
    for where, template in _pod_templates(doc):
        errors += _label_errors(
            f"{where}.metadata.labels", template.get("metadata", {}).get("labels")
        )
        for i, container in enumerate(template.get("spec", {}).get("containers", [])):
            for j, port in enumerate(container.get("ports", [])):
                errors += _port_name_errors(
                    f"{where}.spec.containers.{i}.ports.{j}.name", port.get("name")
                )
    return errors


# ray-project/kuberay ray-operator/controllers/ray/utils/constant.go: 63 - len("-serve-svc")
KUBERAY_MAX_RAYCLUSTER_NAME = 53


def kuberay_operator_errors(doc: dict[str, Any]) -> list[str]:
    """The KubeRay operator's own checks of a RayCluster (ray-project/kuberay
    ray-operator/controllers/ray/utils/validation.go, ValidateRayClusterMetadata and the parts of
    ValidateRayClusterSpec that a chart's fields can break), re-stated here. Not all of them: the
    GCS fault-tolerance, auth, suspend and autoscaler-v2 rules concern fields the chart never
    sets."""
    if doc.get("kind") != "RayCluster":
        return []
    errors = []
    name = doc.get("metadata", {}).get("name", "")
    if len(name) > KUBERAY_MAX_RAYCLUSTER_NAME:
        errors.append(
            f"metadata.name: RayCluster name should be no more than {KUBERAY_MAX_RAYCLUSTER_NAME} "
            f"characters ({name!r} has {len(name)})"
        )
    errors += [f"metadata.name: RayCluster name should be a valid DNS1035 label: {e}"
               for e in _dns1035(name)]  # fmt: skip
    spec = doc.get("spec", {})
    autoscaling = bool(spec.get("enableInTreeAutoscaling"))
    groups = [("head", spec.get("headGroupSpec", {}))]
    groups += [
        (g.get("groupName", f"#{i}"), g) for i, g in enumerate(spec.get("workerGroupSpecs", []))
    ]
    for group_name, group in groups:
        if not group.get("template", {}).get("spec", {}).get("containers"):
            errors.append(f"{group_name}: should have at least one container")
        params = group.get("rayStartParams", {})
        if any(
            params.get(k) for k in ("num-cpus", "num-gpus", "memory", "resources")
        ) and group.get("resources"):
            errors.append(f"{group_name}: resources set in both rayStartParams and resources")
        if "labels" in params:
            errors.append(f"{group_name}: rayStartParams['labels'] is not supported")
        if group_name == "head":
            continue
        low, high = group.get("minReplicas"), group.get("maxReplicas")
        if not autoscaling and (low is None or high is None):
            errors.append(f"worker group {group_name} must set both minReplicas and maxReplicas")
        if low is not None and high is not None and low > high:
            errors.append(
                f"worker group {group_name} has minReplicas {low} greater than maxReplicas {high}"
            )
    return errors
