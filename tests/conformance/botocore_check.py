"""Checks the lab's AWS call log against botocore's service models.

botocore's models are the shapes AWS publishes for every SDK, so a request that breaks them is
one real AWS would refuse, and a response that botocore cannot parse is one no SDK could read.
For each call the lab logged (`tests/tests/botocore_conformance.rs` writes the log as JSON):

- the request is read back into the operation's input (the Query form of ElastiCache, STS and
  IAM by the members' `locationName`s, EC2's flattened form by its `queryName`s, KMS's JSON body
  and `X-Amz-Target`, Route 53's path, query string and XML body, CloudWatch's RPC v2 CBOR
  body as the lab decoded it into JSON, and its path `/service/{targetPrefix}/operation/{Op}`)
  and validated: botocore's
  `ParamValidator` (required members, types, minimums) plus what it leaves out (maximums,
  lengths, enums, and parameters the model does not know);
- the response is parsed with botocore's own parser for the protocol (CloudWatch's from the
  CBOR bytes as sent, `body_hex`, with its `x-amzn-query-error` header): an error must give
  the `Code` the lab logged and a `Message`; a success must carry the members the agent reads.

Usage: `python3 botocore_check.py CALLS.json` (exit 0: no violation; 1: violations, listed) or
`python3 botocore_check.py --self-test` (deliberately bad calls must be caught). The calls file
is `{"calls": [...], "deliberately_invalid": [seq, ...]}`: requests a test sent on purpose to
draw an error are not validated, but their responses are still parsed.
"""

import json
import re
import struct
import sys
from urllib.parse import parse_qsl, unquote
import xml.etree.ElementTree as ET

import botocore.session
from botocore import parsers
from botocore.validate import ParamValidator

SERVICES = {
    "elasticache": "elasticache",
    "route53": "route53",
    "sts": "sts",
    "ec2": "ec2",
    "kms": "kms",
    "iam": "iam",
    "cloudwatch": "cloudwatch",
}

CBOR = "smithy-rpc-v2-cbor"


class Findings:
    def __init__(self):
        self.items = []

    def add(self, call, what):
        self.items.append(f"call {call.get('seq')} {call.get('service')} {call.get('action')}: {what}")


# --- requests ----------------------------------------------------------------------------


def scalar(shape, text):
    t = shape.type_name
    if t in ("integer", "long"):
        return int(text)
    if t == "boolean":
        return text == "true"
    if t in ("float", "double"):
        return float(text)
    return text


def from_query(shape, prefix, flat, used):
    """One member of a Query request, from its flattened `A.B.1.C` keys."""
    t = shape.type_name
    if t == "structure":
        out = {}
        for name, member in shape.members.items():
            key = member.serialization.get("name", name)
            value = from_query(member, f"{prefix}.{key}" if prefix else key, flat, used)
            if value is not None:
                out[name] = value
        return out if out or not prefix else None
    if t == "list":
        item = shape.member.serialization.get("name", "member")
        items, n = [], 1
        while True:
            p = f"{prefix}.{item}.{n}"
            if p not in flat and not any(k.startswith(p + ".") for k in flat):
                break
            items.append(from_query(shape.member, p, flat, used))
            n += 1
        if not items and prefix in flat:
            used.add(prefix)
            return []
        return items or None
    if prefix not in flat:
        return None
    used.add(prefix)
    return scalar(shape, flat[prefix])


def ec2_key(name, member):
    """EC2's wire name for a member: its queryName, else its locationName capitalized."""
    ser = member.serialization
    if "queryName" in ser:
        return ser["queryName"]
    key = ser.get("name", name)
    return key[0].upper() + key[1:]


def from_ec2(shape, prefix, flat, used):
    """One member of an EC2 request: like the Query form, but every list is flat (`A.1`)."""
    t = shape.type_name
    if t == "structure":
        out = {}
        for name, member in shape.members.items():
            key = ec2_key(name, member)
            value = from_ec2(member, f"{prefix}.{key}" if prefix else key, flat, used)
            if value is not None:
                out[name] = value
        return out if out or not prefix else None
    if t == "list":
        items, n = [], 1
        while True:
            p = f"{prefix}.{n}"
            if p not in flat and not any(k.startswith(p + ".") for k in flat):
                break
            items.append(from_ec2(shape.member, p, flat, used))
            n += 1
        return items or None
    if prefix not in flat:
        return None
    used.add(prefix)
    return scalar(shape, flat[prefix])


def strip_ns(tag):
    return tag.split("}", 1)[-1]


def from_xml(shape, elem, findings, call, path):
    t = shape.type_name
    if t == "structure":
        out = {}
        by_tag = {}
        for child in elem:
            by_tag.setdefault(strip_ns(child.tag), []).append(child)
        known = set()
        for name, member in shape.members.items():
            tag = member.serialization.get("name", name)
            known.add(tag)
            if tag in by_tag:
                out[name] = from_xml(member, by_tag[tag][0], findings, call, f"{path}.{name}")
        for tag in by_tag:
            if tag not in known:
                findings.add(call, f"{path}: element <{tag}> is not in the model")
        return out
    if t == "list":
        tag = shape.member.serialization.get("name", "member")
        items = []
        for child in elem:
            if strip_ns(child.tag) != tag:
                findings.add(call, f"{path}: element <{strip_ns(child.tag)}> where <{tag}> belongs")
                continue
            items.append(from_xml(shape.member, child, findings, call, f"{path}[]"))
        return items
    return scalar(shape, elem.text or "")


def uri_regex(request_uri):
    parts = re.split(r"\{(\w+)\+?\}", request_uri.split("?")[0].rstrip("/"))
    # re.split keeps the placeholders' names at the odd positions.
    pattern = "".join(
        f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part) for i, part in enumerate(parts)
    )
    return re.compile("^" + pattern + "/?$")


def read_request(op, call, findings):
    http = call["http"]["request"]
    shape = op.input_shape
    protocol = op.metadata["protocol"]
    if protocol in ("query", "ec2"):
        flat = dict(parse_qsl(http["body"], keep_blank_values=True))
        if flat.pop("Action", None) != op.name:
            findings.add(call, "the form's Action is not the operation's")
        if flat.pop("Version", None) != op.metadata["apiVersion"]:
            findings.add(call, f"Version is not {op.metadata['apiVersion']}")
        used = set()
        read = from_ec2 if protocol == "ec2" else from_query
        params = (read(shape, "", flat, used) if shape else None) or {}
        for key in sorted(set(flat) - used):
            findings.add(call, f"parameter {key} is not in the model")
        return params
    if protocol in ("json", CBOR):
        if protocol == CBOR:
            path = f"/service/{op.metadata['targetPrefix']}/operation/{op.name}"
            if http["path"] != path:
                findings.add(call, f"path {http['path']}, the protocol says {path}")
        else:
            target = f"{op.metadata['targetPrefix']}.{op.name}"
            if http.get("target") != target:
                findings.add(call, f"X-Amz-Target is {http.get('target')!r}, the model says {target!r}")
        try:
            params = json.loads(http["body"] or "{}")
        except ValueError as e:
            findings.add(call, f"the body is not JSON: {e}")
            return {}
        if not isinstance(params, dict):
            findings.add(call, "the body is not a JSON object")
            return {}
        for key in params:
            if key not in shape.members:
                findings.add(call, f"member {key} is not in the model")
        return {k: v for k, v in params.items() if k in shape.members}
    params = {}
    match = uri_regex(op.http["requestUri"]).match(http["path"])
    if not match:
        findings.add(call, f"path {http['path']} does not match {op.http['requestUri']}")
        return params
    query = dict(parse_qsl(http["query"], keep_blank_values=True))
    for name, member in shape.members.items():
        location = member.serialization.get("location")
        key = member.serialization.get("name", name)
        if location == "uri" and key in match.groupdict():
            params[name] = unquote(match.group(key))
        elif location == "querystring" and key in query:
            params[name] = scalar(member, query.pop(key))
    for key in query:
        findings.add(call, f"query parameter {key} is not in the model")
    payload = [n for n, m in shape.members.items() if "location" not in m.serialization]
    if http["body"]:
        root = ET.fromstring(http["body"])
        expected = shape.serialization.get("name", op.name + "Request")
        if strip_ns(root.tag) != expected:
            findings.add(call, f"body root <{strip_ns(root.tag)}>, the model says <{expected}>")
        ns = shape.serialization.get("xmlNamespace", {}).get("uri")
        if ns and not root.tag.startswith("{" + ns + "}"):
            findings.add(call, f"body root is not in namespace {ns}")
        body = from_xml(shape, root, findings, call, op.name)
        params.update({k: v for k, v in body.items() if k in payload})
    return params


def walk_limits(shape, value, path, report):
    """What ParamValidator does not check: maximums, enums, lengths of lists and strings."""
    meta = shape.metadata
    t = shape.type_name
    if t == "structure" and isinstance(value, dict):
        for name, v in value.items():
            if name in shape.members:
                walk_limits(shape.members[name], v, f"{path}.{name}", report)
        return
    if t == "list" and isinstance(value, list):
        if "max" in meta and len(value) > meta["max"]:
            report(f"{path}: {len(value)} items, the model allows at most {meta['max']}")
        for i, v in enumerate(value):
            walk_limits(shape.member, v, f"{path}[{i}]", report)
        return
    if t == "string" and isinstance(value, str):
        if shape.enum and value not in shape.enum:
            report(f"{path}: {value!r} is not one of {shape.enum}")
        if "max" in meta and len(value) > meta["max"]:
            report(f"{path}: {len(value)} characters, the model allows at most {meta['max']}")
    if t in ("integer", "long") and isinstance(value, int):
        if "max" in meta and value > meta["max"]:
            report(f"{path}: {value} is above the model's maximum {meta['max']}")


def check_request(model, call, findings):
    op = model.operation_model(call["action"])
    params = read_request(op, call, findings)
    if op.input_shape is None:
        if params:
            findings.add(call, f"parameters {sorted(params)} for an operation that takes none")
        return params
    report = ParamValidator().validate(params, op.input_shape)
    if report.has_errors():
        findings.add(call, report.generate_report().replace("\n", "; "))
    walk_limits(op.input_shape, params, op.name, lambda what: findings.add(call, what))
    return params


# --- responses ---------------------------------------------------------------------------


def dig(value, *path):
    for key in path:
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and isinstance(key, int) and key < len(value):
            value = value[key]
        else:
            return None
    return value


def check_success(call, out, findings):
    """The members the agent reads (agent/src/executor/sdk.rs, witness.rs, drill.rs)."""
    need = lambda cond, what: cond or findings.add(call, f"the parsed answer lacks {what}")
    action = call["action"]
    caches = []
    if action in ("CreateServerlessCache", "DeleteServerlessCache"):
        caches = [out.get("ServerlessCache") or {}]
    elif action == "DescribeServerlessCaches":
        need(isinstance(out.get("ServerlessCaches"), list), "ServerlessCaches")
        caches = out.get("ServerlessCaches") or []
    for cache in caches:
        for member in ("ServerlessCacheName", "Status", "ARN", "Engine"):
            need(cache.get(member), f"ServerlessCache.{member}")
        if cache.get("Status") == "available":
            need(dig(cache, "Endpoint", "Address"), "Endpoint.Address of an available cache")
            need(isinstance(dig(cache, "Endpoint", "Port"), int), "Endpoint.Port")
            need(dig(cache, "ReaderEndpoint", "Port") == 6380, "ReaderEndpoint.Port 6380")
        elif cache.get("Status") == "creating" and "Endpoint" in cache:
            findings.add(call, "a creating cache has an Endpoint; AWS gives none yet")
    if action == "ListTagsForResource":
        need(isinstance(out.get("TagList"), list), "TagList")
        for tag in out.get("TagList") or []:
            need(tag.get("Key"), "Tag.Key")
    if action == "ListResourceRecordSets":
        need(isinstance(out.get("ResourceRecordSets"), list), "ResourceRecordSets")
        need(isinstance(out.get("IsTruncated"), bool), "IsTruncated")
        need(out.get("MaxItems"), "MaxItems")
        for rrset in out.get("ResourceRecordSets") or []:
            need(rrset.get("Name") and rrset.get("Type"), "Name and Type")
            need(isinstance(rrset.get("TTL"), int), "TTL")
            need(all(r.get("Value") for r in rrset.get("ResourceRecords") or [None]), "Values")
    if action == "GetCallerIdentity":
        for member in ("UserId", "Account", "Arn"):
            need(out.get(member), member)
    if action == "DescribeSubnets":
        need(isinstance(out.get("Subnets"), list), "Subnets")
        for subnet in out.get("Subnets") or []:
            for member in ("SubnetId", "VpcId", "AvailabilityZone", "State"):
                need(subnet.get(member), f"Subnet.{member}")
    if action == "DescribeSecurityGroups":
        need(isinstance(out.get("SecurityGroups"), list), "SecurityGroups")
        for group in out.get("SecurityGroups") or []:
            for member in ("GroupId", "GroupName", "VpcId"):
                need(group.get(member), f"SecurityGroup.{member}")
    if action == "DescribeKey":
        meta = out.get("KeyMetadata") or {}
        for member in ("KeyId", "Arn", "AWSAccountId", "KeyState", "KeyManager", "KeySpec"):
            need(meta.get(member), f"KeyMetadata.{member}")
        need(isinstance(meta.get("Enabled"), bool), "KeyMetadata.Enabled")
        need(meta.get("CreationDate") is not None, "KeyMetadata.CreationDate")
        need((meta.get("KeyState") == "Enabled") == meta.get("Enabled"), "Enabled matching KeyState")
    if action == "SimulatePrincipalPolicy":
        need(isinstance(out.get("EvaluationResults"), list), "EvaluationResults")
        need(isinstance(out.get("IsTruncated"), bool), "IsTruncated")
        for result in out.get("EvaluationResults") or []:
            need(result.get("EvalActionName") and result.get("EvalDecision"), "EvalActionName and EvalDecision")
            for specific in result.get("ResourceSpecificResults") or []:
                need(specific.get("EvalResourceName") and specific.get("EvalResourceDecision"),
                     "ResourceSpecificResult names and decisions")
    if action == "DescribeUserGroups":
        need(isinstance(out.get("UserGroups"), list), "UserGroups")
        for group in out.get("UserGroups") or []:
            for member in ("UserGroupId", "Status", "Engine", "ARN"):
                need(group.get(member), f"UserGroup.{member}")
    if action == "DescribeServerlessCacheSnapshots":
        need(isinstance(out.get("ServerlessCacheSnapshots"), list), "ServerlessCacheSnapshots")
        for snapshot in out.get("ServerlessCacheSnapshots") or []:
            for member in ("ServerlessCacheSnapshotName", "ARN", "Status", "SnapshotType"):
                need(snapshot.get(member), f"ServerlessCacheSnapshot.{member}")
            need(dig(snapshot, "ServerlessCacheConfiguration", "ServerlessCacheName"),
                 "ServerlessCacheConfiguration.ServerlessCacheName")
    if action == "GetHostedZone":
        zone = out.get("HostedZone") or {}
        need(zone.get("Id") and zone.get("Name"), "HostedZone.Id and Name")
        private = dig(zone, "Config", "PrivateZone")
        need(isinstance(private, bool), "HostedZone.Config.PrivateZone")
        if private:
            need(out.get("VPCs"), "VPCs of a private zone")
        else:
            need(dig(out, "DelegationSet", "NameServers"), "DelegationSet of a public zone")
    if action in ("CreateHealthCheck", "GetHealthCheck"):
        check = out.get("HealthCheck") or {}
        need(check.get("Id") and check.get("CallerReference"), "HealthCheck.Id and CallerReference")
        need(dig(check, "HealthCheckConfig", "Type"), "HealthCheck.HealthCheckConfig.Type")
    if action == "ListHealthChecks":
        need(isinstance(out.get("HealthChecks"), list), "HealthChecks")
        need(isinstance(out.get("IsTruncated"), bool), "IsTruncated")
    if action == "GetHealthCheckStatus":
        need(dig(out, "HealthCheckObservations", 0, "StatusReport", "Status"),
             "HealthCheckObservations[0].StatusReport.Status")
    if action == "DescribeAlarms":
        need(isinstance(out.get("MetricAlarms"), list), "MetricAlarms")
        for alarm in out.get("MetricAlarms") or []:
            for member in ("AlarmName", "AlarmArn", "StateValue", "MetricName", "Namespace",
                           "Statistic", "Period", "EvaluationPeriods", "ComparisonOperator"):
                need(alarm.get(member) is not None, f"MetricAlarm.{member}")
            need(isinstance(alarm.get("Threshold"), float), "MetricAlarm.Threshold as a double")
    if action in ("ChangeResourceRecordSets", "GetChange"):
        info = out.get("ChangeInfo") or {}
        need(str(info.get("Id", "")).startswith("/change/C"), "ChangeInfo.Id /change/C…")
        need(info.get("Status") in ("PENDING", "INSYNC"), "ChangeInfo.Status")
        need(info.get("SubmittedAt"), "ChangeInfo.SubmittedAt")


def check_response(model, call, findings):
    op = model.operation_model(call["action"])
    http = call["http"]
    response = {
        "status_code": http["status"],
        "headers": {"x-amzn-requestid": "lab"},
        "body": http["body"].encode(),
    }
    if model.protocol == "json" and http["body"]:
        try:
            json.loads(http["body"])
        except ValueError as e:
            findings.add(call, f"the answer is not JSON: {e}")
            return
    if model.protocol == CBOR:
        if http.get("body_hex") is None:
            findings.add(call, "a CBOR answer whose bytes were not logged")
            return
        response["body"] = bytes.fromhex(http["body_hex"])
        if http.get("query_error"):
            response["headers"]["x-amzn-query-error"] = http["query_error"]
        elif http["status"] >= 300:
            findings.add(call, "a CloudWatch error without x-amzn-query-error")
    try:
        out = parsers.create_parser(model.protocol).parse(response, op.output_shape)
    except Exception as e:  # botocore's parsers raise several kinds; any is a finding
        findings.add(call, f"botocore cannot parse the answer: {type(e).__name__}: {e}")
        return
    if http["status"] >= 300:
        if model.protocol == "ec2":
            # botocore also reads a Query ErrorResponse here; AWS's EC2 never sends one.
            root = ET.fromstring(http["body"])
            if strip_ns(root.tag) != "Response" or root.find("Errors/Error/Code") is None:
                findings.add(call, "an EC2 error that is not <Response><Errors><Error>")
        error = out.get("Error") or {}
        if error.get("Code") != call.get("error_code"):
            findings.add(call, f"botocore reads code {error.get('Code')!r}, the lab sent {call.get('error_code')!r}")
        if not error.get("Message"):
            findings.add(call, "botocore reads no Message")
        # An error shape's wire code is its `error.code` when it has one, else its name
        # (ElastiCache's InvalidParameterValueException is sent as InvalidParameterValue).
        codes = {
            shape.metadata.get("error", {}).get("code", shape.name): shape
            for shape in model.error_shapes
        }
        shape = codes.get(error.get("Code"))
        if shape is not None:
            status = shape.metadata.get("error", {}).get("httpStatusCode")
            if status not in (None, http["status"]):
                findings.add(call, f"status {http['status']}, the model says {status}")
        return
    if "Error" in out:
        findings.add(call, f"a {http['status']} answer parses as an error")
        return
    if op.output_shape is not None:
        walk_limits(op.output_shape, out, op.name + "Output", lambda w: findings.add(call, w))
    check_success(call, out, findings)


def check(doc, session=None):
    session = session or botocore.session.get_session()
    models = {k: session.get_service_model(v) for k, v in SERVICES.items()}
    invalid_on_purpose = set(doc.get("deliberately_invalid", []))
    findings = Findings()
    counts = {"requests": 0, "responses": 0}
    for call in doc["calls"]:
        model = models[call["service"]]
        if not call.get("http") or call["action"] not in model.operation_names:
            findings.add(call, "no recorded exchange, or an action the model does not have")
            continue
        if call["seq"] not in invalid_on_purpose:
            check_request(model, call, findings)
            counts["requests"] += 1
        check_response(model, call, findings)
        counts["responses"] += 1
    return findings, counts


# --- self-test ---------------------------------------------------------------------------


def fake(seq, service, action, status, body, error_code=None, method="POST", path="/", query="", response=""):
    return {
        "seq": seq,
        "service": service,
        "action": action,
        "error_code": error_code,
        "http": {
            "request": {"method": method, "path": path, "query": query, "body": body},
            "status": status,
            "body": response,
        },
    }


def cbor(value):
    """A value in CBOR (maps, lists, strings, integers, doubles, booleans): what the self-test's
    CloudWatch answers need."""
    def head(major, n):
        if n < 24:
            return bytes([major << 5 | n])
        for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if n < 1 << (8 * size):
                return bytes([major << 5 | extra]) + n.to_bytes(size, "big")
        raise ValueError(n)
    if isinstance(value, bool):
        return b"\xf5" if value else b"\xf4"
    if isinstance(value, int):
        return head(0, value) if value >= 0 else head(1, -1 - value)
    if isinstance(value, float):
        return b"\xfb" + struct.pack(">d", value)
    if isinstance(value, str):
        data = value.encode()
        return head(3, len(data)) + data
    if isinstance(value, list):
        return head(4, len(value)) + b"".join(cbor(v) for v in value)
    if isinstance(value, dict):
        return head(5, len(value)) + b"".join(cbor(k) + cbor(v) for k, v in value.items())
    raise TypeError(value)


def self_test():
    ok_describe = (
        '<DescribeServerlessCachesResponse xmlns="http://elasticache.amazonaws.com/doc/2015-02-02/">'
        "<DescribeServerlessCachesResult><ServerlessCaches/></DescribeServerlessCachesResult>"
        "<ResponseMetadata><RequestId>r</RequestId></ResponseMetadata></DescribeServerlessCachesResponse>"
    )
    change = (
        '<ChangeResourceRecordSetsRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeBatch><Changes>'
        "<Change><Action>{action}</Action><ResourceRecordSet><Name>v.lab.internal.</Name><Type>CNAME</Type>"
        "<TTL>{ttl}</TTL><ResourceRecords><ResourceRecord><Value>x.example.</Value></ResourceRecord>"
        "</ResourceRecords></ResourceRecordSet></Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"
    )
    change_ok = (
        '<?xml version="1.0"?>\n<ChangeResourceRecordSetsResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
        "<ChangeInfo><Id>/change/C0000000000001</Id><Status>PENDING</Status>"
        "<SubmittedAt>2026-01-01T00:00:00.000Z</SubmittedAt></ChangeInfo></ChangeResourceRecordSetsResponse>"
    )
    path = "/2013-04-01/hostedzone/ZLAB/rrset"
    good = [
        fake(1, "elasticache", "DescribeServerlessCaches", 200,
             "Action=DescribeServerlessCaches&Version=2015-02-02&MaxResults=20", response=ok_describe),
        fake(2, "route53", "ChangeResourceRecordSets", 200, change.format(action="UPSERT", ttl=30),
             path=path, response=change_ok),
    ]
    bad = {
        "a missing required member (Engine)": fake(
            3, "elasticache", "CreateServerlessCache", 200,
            "Action=CreateServerlessCache&Version=2015-02-02&ServerlessCacheName=x", response=ok_describe),
        "a parameter the model does not have": fake(
            4, "elasticache", "DescribeServerlessCaches", 200,
            "Action=DescribeServerlessCaches&Version=2015-02-02&MaxRecords=1", response=ok_describe),
        "an action outside the enum": fake(
            5, "route53", "ChangeResourceRecordSets", 200, change.format(action="MOVE", ttl=30),
            path=path, response=change_ok),
        "a TTL below the model's minimum": fake(
            6, "route53", "ChangeResourceRecordSets", 200, change.format(action="UPSERT", ttl=-1),
            path=path, response=change_ok),
        "a TTL above the model's maximum": fake(
            7, "route53", "ChangeResourceRecordSets", 200, change.format(action="UPSERT", ttl=2**31),
            path=path, response=change_ok),
        "an error code botocore reads otherwise": fake(
            8, "elasticache", "DescribeServerlessCaches", 400,
            "Action=DescribeServerlessCaches&Version=2015-02-02", error_code="InvalidParameterValue",
            response="<ErrorResponse><Error><Type>Sender</Type><Code>Other</Code><Message>m</Message></Error></ErrorResponse>"),
        "a status other than the model's": fake(
            10, "elasticache", "DescribeServerlessCaches", 400,
            "Action=DescribeServerlessCaches&Version=2015-02-02", error_code="ServerlessCacheNotFoundFault",
            response="<ErrorResponse><Error><Type>Sender</Type><Code>ServerlessCacheNotFoundFault</Code><Message>m</Message></Error></ErrorResponse>"),
        "an answer without the members the agent reads": fake(
            9, "route53", "ChangeResourceRecordSets", 200, change.format(action="UPSERT", ttl=30),
            path=path, response=change_ok.replace("/change/C", "/nochange/")),
    }
    subnets_ok = (
        '<?xml version="1.0"?>\n<DescribeSubnetsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        "<requestId>r</requestId><subnetSet><item><subnetId>subnet-1</subnetId><vpcId>vpc-1</vpcId>"
        "<availabilityZone>us-east-1a</availabilityZone><state>available</state></item></subnetSet>"
        "</DescribeSubnetsResponse>"
    )
    ec2_error = (
        "<Response><Errors><Error><Code>{code}</Code><Message>m</Message></Error></Errors>"
        "<RequestID>r</RequestID></Response>"
    )
    key_ok = json.dumps({"KeyMetadata": {
        "KeyId": "k", "Arn": "arn:aws:kms:us-east-1:123456789012:key/k", "AWSAccountId": "123456789012",
        "KeyState": "Enabled", "Enabled": True, "KeyManager": "CUSTOMER", "KeySpec": "SYMMETRIC_DEFAULT",
        "CreationDate": 1767225600.0}})
    good += [
        fake(11, "ec2", "DescribeSubnets", 200,
             "Action=DescribeSubnets&Version=2016-11-15&SubnetId.1=subnet-1", response=subnets_ok),
        fake(12, "ec2", "DescribeSubnets", 400,
             "Action=DescribeSubnets&Version=2016-11-15&SubnetId.1=subnet-x",
             error_code="InvalidSubnetID.NotFound", response=ec2_error.format(code="InvalidSubnetID.NotFound")),
        dict(fake(13, "kms", "DescribeKey", 200, '{"KeyId": "alias/k"}', response=key_ok),
             **{}),
        fake(14, "kms", "DescribeKey", 400, '{"KeyId": "alias/x"}', error_code="NotFoundException",
             response='{"__type": "NotFoundException", "message": "m"}'),
        fake(15, "sts", "GetCallerIdentity", 200, "Action=GetCallerIdentity&Version=2011-06-15",
             response='<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
             "<GetCallerIdentityResult><Arn>a</Arn><UserId>u</UserId><Account>1</Account>"
             "</GetCallerIdentityResult></GetCallerIdentityResponse>"),
    ]
    for call in good:
        if call["service"] == "kms":
            call["http"]["request"]["target"] = "TrentService.DescribeKey"
    wrong_target = fake(16, "kms", "DescribeKey", 200, '{"KeyId": "k"}', response=key_ok)
    wrong_target["http"]["request"]["target"] = "TrentService.ListKeys"
    bad.update({
        "an EC2 list in the Query form (SubnetIds.SubnetId.1)": fake(
            17, "ec2", "DescribeSubnets", 200,
            "Action=DescribeSubnets&Version=2016-11-15&SubnetIds.SubnetId.1=subnet-1", response=subnets_ok),
        "an EC2 error code botocore reads otherwise": fake(
            18, "ec2", "DescribeSubnets", 400, "Action=DescribeSubnets&Version=2016-11-15",
            error_code="InvalidSubnetID.NotFound", response=ec2_error.format(code="Other")),
        "an EC2 error in the Query ErrorResponse form": fake(
            19, "ec2", "DescribeSubnets", 400, "Action=DescribeSubnets&Version=2016-11-15",
            error_code="InvalidSubnetID.NotFound",
            response="<ErrorResponse><Error><Code>InvalidSubnetID.NotFound</Code><Message>m</Message></Error></ErrorResponse>"),
        "a KMS X-Amz-Target for another operation": wrong_target,
        "a KMS member the model does not have": dict(
            fake(20, "kms", "DescribeKey", 200, '{"KeyId": "k", "Key": "k"}', response=key_ok)),
        "a KMS answer whose Enabled contradicts KeyState": fake(
            21, "kms", "DescribeKey", 200, '{"KeyId": "k"}', response=key_ok.replace('"Enabled": true', '"Enabled": false')),
        "an IAM result without its decision": fake(
            22, "iam", "SimulatePrincipalPolicy", 200,
            "Action=SimulatePrincipalPolicy&Version=2010-05-08&PolicySourceArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr"
            "&ActionNames.member.1=ec2%3ADescribeSubnets",
            response='<SimulatePrincipalPolicyResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">'
            "<SimulatePrincipalPolicyResult><EvaluationResults><member><EvalActionName>ec2:DescribeSubnets"
            "</EvalActionName></member></EvaluationResults><IsTruncated>false</IsTruncated>"
            "</SimulatePrincipalPolicyResult></SimulatePrincipalPolicyResponse>"),
    })
    for call in bad.values():
        if call["service"] == "kms" and "target" not in call["http"]["request"]:
            call["http"]["request"]["target"] = "TrentService.DescribeKey"

    def cloudwatch(seq, action, status, request, answer, error_code=None, query_error=None, path=None):
        call = fake(seq, "cloudwatch", action, status, json.dumps(request), error_code=error_code,
                    path=path or f"/service/GraniteServiceVersion20100801/operation/{action}")
        call["http"]["body_hex"] = cbor(answer).hex()
        if query_error:
            call["http"]["query_error"] = query_error
        return call

    datum = {"Namespace": "ValkeyDR", "MetricData": [{"MetricName": "m", "Value": 1.0}]}
    invalid = {"__type": "com.amazonaws.cloudwatch#InvalidParameterValueException", "message": "m"}
    good += [
        cloudwatch(23, "PutMetricData", 200, datum, {}),
        cloudwatch(24, "PutMetricData", 400, datum, invalid, error_code="InvalidParameterValue",
                   query_error="InvalidParameterValue;Sender"),
        cloudwatch(25, "DescribeAlarms", 200, {"AlarmNames": ["a"]}, {"MetricAlarms": [], "CompositeAlarms": []}),
    ]
    many = [{"Name": f"d{i}", "Value": "v"} for i in range(31)]
    bad.update({
        "a CloudWatch metric with 31 dimensions": cloudwatch(
            26, "PutMetricData", 200,
            {"Namespace": "N", "MetricData": [{"MetricName": "m", "Value": 1.0, "Dimensions": many}]}, {}),
        "a CloudWatch request on another operation's path": cloudwatch(
            27, "PutMetricData", 200, datum, {}, path="/service/GraniteServiceVersion20100801/operation/Other"),
        "a CloudWatch error code botocore reads otherwise": cloudwatch(
            28, "PutMetricData", 400, datum, invalid, error_code="InvalidParameterValue",
            query_error="Other;Sender"),
        "a CloudWatch error without its Query code": cloudwatch(
            29, "PutMetricData", 400, datum, invalid, error_code="InvalidParameterValue"),
        "a CloudWatch alarm without its state": cloudwatch(
            30, "DescribeAlarms", 200, {}, {"MetricAlarms": [{"AlarmName": "a"}]}),
    })
    session = botocore.session.get_session()
    findings, _ = check({"calls": good}, session)
    failures = [f"a good call was flagged: {f}" for f in findings.items]
    for what, call in bad.items():
        findings, _ = check({"calls": [call]}, session)
        if not findings.items:
            failures.append(f"not caught: {what}")
    return failures


def main(argv):
    failures = self_test()
    if failures:
        print("botocore_check self-test FAILED: the checker would miss violations:")
        print("\n".join("  " + f for f in failures))
        return 2
    if argv[1:] == ["--self-test"]:
        print(f"self-test passed (botocore {botocore.__version__} from {botocore.__file__})")
        return 0
    with open(argv[1]) as f:
        doc = json.load(f)
    findings, counts = check(doc)
    print(
        f"botocore {botocore.__version__}: checked {counts['requests']} requests and "
        f"{counts['responses']} responses of {len(doc['calls'])} calls"
    )
    if findings.items:
        print(f"{len(findings.items)} violations:")
        print("\n".join("  " + f for f in findings.items))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
