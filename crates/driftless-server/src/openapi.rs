//! `GET /openapi.json`: the HTTP API described as OpenAPI 3.1, and `GET /api`: a small explorer
//! over it that works offline (one embedded page, no CDN).
//!
//! The description is written here, beside the routes, rather than derived by a macro framework:
//! the handlers build their bodies as JSON values, so there are no response types to derive from,
//! and a derive framework with a bundled Swagger UI would add a large share of the build. A test
//! (`tests/console.rs`) holds the two together: every route the routers register is described, and
//! every described operation is served.

use axum::http::header;
use axum::response::{Html, IntoResponse};
use serde_json::{Map, Value, json};
use std::sync::OnceLock;

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

pub async fn handler() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document().to_string(),
    )
}

pub async fn explorer() -> impl IntoResponse {
    Html(include_str!("../assets/explorer.html"))
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn json_body(schema: Value) -> Value {
    json!({"content": {"application/json": {"schema": schema}}})
}

fn ok(description: &str, schema: Value) -> (String, Value) {
    let mut r = json_body(schema);
    r["description"] = description.into();
    ("200".into(), r)
}

fn error(status: u16, description: &str) -> (String, Value) {
    let mut r = json_body(schema_ref("Error"));
    r["description"] = description.into();
    (status.to_string(), r)
}

fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "description": description,
           "schema": {"type": "string"}})
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "query", "required": false, "description": description,
           "schema": schema})
}

/// One operation. `auth` adds the bearer requirement and its 401; reads also answer 400 for bad
/// parameters.
struct Op {
    id: &'static str,
    tag: &'static str,
    summary: &'static str,
    params: Vec<Value>,
    body: Option<Value>,
    responses: Vec<(String, Value)>,
    auth: bool,
}

impl Op {
    fn json(self) -> Value {
        let mut o = Map::new();
        o.insert("operationId".into(), self.id.into());
        o.insert("tags".into(), json!([self.tag]));
        o.insert("summary".into(), self.summary.into());
        if !self.params.is_empty() {
            o.insert("parameters".into(), Value::Array(self.params));
        }
        if let Some(b) = self.body {
            o.insert("requestBody".into(), b);
        }
        let mut responses: Map<String, Value> = self.responses.into_iter().collect();
        if self.auth {
            let (k, v) = error(401, "Missing or unknown bearer token.");
            responses.insert(k, v);
            o.insert("security".into(), json!([{"bearer": []}]));
        } else {
            o.insert("security".into(), json!([]));
        }
        o.insert("responses".into(), Value::Object(responses));
        Value::Object(o)
    }
}

fn limit(default: u32, max: u32) -> Value {
    query(
        "limit",
        &format!("At most this many (default {default})."),
        json!({"type": "integer", "minimum": 1, "maximum": max}),
    )
}

fn operations() -> Vec<(&'static str, &'static str, Op)> {
    let sku = || path_param("sku", "The sku.");
    let channel = || path_param("id", "A configured channel id.");
    let bad = || error(400, "Invalid parameters or body; nothing was changed.");
    let not_found = |what: &str| error(404, what);
    vec![
        (
            "/v1/events",
            "post",
            Op {
                id: "postEvents",
                tag: "events",
                summary: "Send one event, an array of events, or NDJSON. Answers once the events are durable.",
                params: vec![],
                body: Some(json!({"required": true, "content": {
                    "application/json": {"schema": {"oneOf": [schema_ref("Event"), {"type": "array", "items": schema_ref("Event")}]}},
                    "application/x-ndjson": {"schema": {"type": "string"}},
                }})),
                responses: vec![
                    ok(
                        "Each event's outcome, in request order.",
                        schema_ref("EventResults"),
                    ),
                    ("409".into(), {
                        let mut r = json_body(schema_ref("EventResults"));
                        r["description"] =
                            "A single event whose id is taken by a different payload.".into();
                        r
                    }),
                    ("422".into(), {
                        let mut r = json_body(schema_ref("EventResults"));
                        r["description"] = "A single event rejected by the configuration.".into();
                        r
                    }),
                    ("202".into(), {
                        let mut r = json_body(schema_ref("EventResults"));
                        r["description"] = "With the JetStream bus (nats_url): some events are durable in JetStream but their outcome did not arrive in time (`\"outcome\": \"accepted\"`); GET /v1/events/{source}/{id} gives the final one (docs/nats.md).".into();
                        r
                    }),
                    bad(),
                    error(
                        403,
                        "A read-only token, or a token sending as another system.",
                    ),
                    error(413, "Body too large."),
                    error(503, "Overloaded; retry after the Retry-After header."),
                ],
                auth: true,
            },
        ),
        (
            "/v1/inventory",
            "get",
            Op {
                id: "listInventory",
                tag: "inventory",
                summary: "Inventory objects paged by sku.",
                params: vec![
                    query("after", "Start after this sku.", json!({"type": "string"})),
                    limit(100, 1000),
                ],
                body: None,
                responses: vec![ok("A page.", schema_ref("InventoryPage")), bad()],
                auth: true,
            },
        ),
        (
            "/v1/inventory/{sku}",
            "get",
            Op {
                id: "getInventory",
                tag: "inventory",
                summary: "Every location and state of a sku, ATP and channel quantities, and its version; with `at`, as the hub knew it then.",
                params: vec![
                    sku(),
                    query(
                        "at",
                        "An RFC 3339 instant: fold the ledger entries received up to it.",
                        json!({"type": "string", "format": "date-time"}),
                    ),
                ],
                body: None,
                responses: vec![
                    ok("The inventory object.", schema_ref("Inventory")),
                    bad(),
                    not_found("A sku never seen."),
                ],
                auth: true,
            },
        ),
        (
            "/v1/inventory/{sku}/history",
            "get",
            Op {
                id: "getHistory",
                tag: "inventory",
                summary: "The sku's newest ledger entries, oldest first, each with its outcome and source.",
                params: vec![sku(), limit(1000, 10000)],
                body: None,
                responses: vec![
                    ok("The history.", schema_ref("History")),
                    bad(),
                    not_found("A sku never seen."),
                ],
                auth: true,
            },
        ),
        (
            "/v1/incidents",
            "get",
            Op {
                id: "listIncidents",
                tag: "incidents",
                summary: "Incidents, newest first, filtered by kind, sku and system.",
                params: vec![
                    query("kind", "An incident kind.", json!({"type": "string"})),
                    query("sku", "Only this sku.", json!({"type": "string"})),
                    query("system", "Only this system.", json!({"type": "string"})),
                    limit(100, 1000),
                ],
                body: None,
                responses: vec![ok("Incidents.", schema_ref("Incidents")), bad()],
                auth: true,
            },
        ),
        (
            "/v1/channels",
            "get",
            Op {
                id: "listChannels",
                tag: "channels",
                summary: "Every configured channel with its backlog.",
                params: vec![],
                body: None,
                responses: vec![ok(
                    "Channels.",
                    json!({"type": "object", "required": ["channels"], "properties": {"channels": {"type": "array", "items": schema_ref("ChannelSummary")}}}),
                )],
                auth: true,
            },
        ),
        (
            "/v1/channels/{id}",
            "get",
            Op {
                id: "getChannel",
                tag: "channels",
                summary: "One channel: pending, last push, errors, held skus, dead letters.",
                params: vec![channel()],
                body: None,
                responses: vec![
                    ok("The channel.", schema_ref("Channel")),
                    not_found("No such channel."),
                ],
                auth: true,
            },
        ),
        (
            "/v1/channels/{id}/replay",
            "post",
            Op {
                id: "replayChannel",
                tag: "channels",
                summary: "Push again: one sku, or every dead letter and held sku of the channel. Needs an operator token.",
                params: vec![channel()],
                body: Some(
                    json!({"required": false, "content": {"application/json": {"schema": {"type": "object", "additionalProperties": false, "properties": {"sku": {"type": "string"}}}}}}),
                ),
                responses: vec![
                    ok(
                        "How many rows were queued again.",
                        json!({"type": "object", "required": ["channel", "replayed"], "properties": {"channel": {"type": "string"}, "replayed": {"type": "integer"}}}),
                    ),
                    bad(),
                    error(403, "Not an operator token."),
                    not_found("No such channel."),
                ],
                auth: true,
            },
        ),
        (
            "/v1/channels/{id}/hold",
            "post",
            Op {
                id: "holdChannelSku",
                tag: "channels",
                summary: "Stop pushing one sku to the channel until it is released with replay. Needs an operator token.",
                params: vec![channel()],
                body: Some(json_body(
                    json!({"type": "object", "required": ["sku"], "additionalProperties": false, "properties": {"sku": {"type": "string"}}}),
                )),
                responses: vec![
                    ok(
                        "The sku is held.",
                        json!({"type": "object", "required": ["channel", "sku", "held"], "properties": {"channel": {"type": "string"}, "sku": {"type": "string"}, "held": {"type": "boolean"}}}),
                    ),
                    bad(),
                    error(403, "Not an operator token."),
                    not_found("No such channel."),
                ],
                auth: true,
            },
        ),
        (
            "/v1/channels/{id}/observations",
            "post",
            Op {
                id: "postObservations",
                tag: "channels",
                summary: "A channel reports the quantities it shows.",
                params: vec![channel()],
                body: Some(json_body(
                    json!({"type": "object", "required": ["observations"], "properties": {"observations": {"type": "array", "items": {
                "type": "object", "required": ["sku", "quantity"], "additionalProperties": false,
                "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}, "observed_at": {"type": "string", "format": "date-time"}, "actor": {"type": "string"}}}}}}),
                )),
                responses: vec![
                    ok(
                        "What each observation found.",
                        json!({"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": {"type": "object"}}}}),
                    ),
                    bad(),
                    error(403, "A read-only token or another system's token."),
                    not_found("No such channel."),
                ],
                auth: true,
            },
        ),
        (
            "/v1/observations",
            "post",
            Op {
                id: "postSystemObservations",
                tag: "checkpoints",
                summary: "Any system reports what it shows (its own token): compared with what it is expected to show; drift past the hop's SLA opens a handoff_drift incident.",
                params: vec![],
                body: Some(json_body(
                    json!({"type": "object", "required": ["observations"], "additionalProperties": false, "properties": {
                        "system": {"type": "string", "description": "Whose observations; the token's own system when absent (an operator token must name it)."},
                        "observations": {"type": "array", "maxItems": 1000, "items": {
                "type": "object", "required": ["sku", "quantity", "observed_at"], "additionalProperties": false,
                "properties": {"sku": {"type": "string"}, "location": {"type": "string", "description": "Absent: a channel-level quantity."},
                    "state": {"type": "string", "enum": ["on_hand", "committed", "reserved", "incoming", "unavailable", "available", "channel"]},
                    "channel": {"type": "string", "description": "The channel a channel-level observation shows (default: the system)."},
                    "quantity": {"type": "integer", "description": "In base units."}, "observed_at": {"type": "string", "format": "date-time"}, "actor": {"type": "string"}}}}}}),
                )),
                responses: vec![
                    ok(
                        "Per observation: expected, outcome (in_line, drifting, ignored when older than the one recorded), hand-off, cause, incident opened or closed.",
                        json!({"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": {"type": "object"}}}}),
                    ),
                    bad(),
                    error(403, "A read-only token, or a token naming another system."),
                    error(
                        429,
                        "The system is over [checkpoints] max_observations_per_second; retry after Retry-After.",
                    ),
                ],
                auth: true,
            },
        ),
        (
            "/v1/events/{source}/{id}",
            "get",
            Op {
                id: "getEvent",
                tag: "events",
                summary: "One event's stored outcome, by its identity (source, id).",
                params: vec![
                    path_param("source", "The sending system."),
                    path_param("id", "The event id the system gave it."),
                ],
                body: None,
                responses: vec![
                    ok(
                        "The stored outcome, with the event as sent.",
                        json!({"type": "object", "required": ["source", "id", "outcome", "received_at", "event"], "properties": {
                            "source": {"type": "string"}, "id": {"type": "string"}, "outcome": {"type": "string"},
                            "reason": {"type": "string"}, "received_at": {"type": "string", "format": "date-time"},
                            "event": {"type": "object"}}}),
                    ),
                    ("202".into(), {
                        let mut r = json_body(
                            json!({"type": "object", "required": ["source", "id", "outcome"], "properties": {
                            "source": {"type": "string"}, "id": {"type": "string"}, "outcome": {"const": "accepted"}}}),
                        );
                        r["description"] =
                            "With the JetStream bus: accepted and not applied yet.".into();
                        r
                    }),
                    bad(),
                    not_found("No event of that identity is stored."),
                ],
                auth: true,
            },
        ),
        (
            "/v1/epcis/capture",
            "post",
            Op {
                id: "captureEpcis",
                tag: "events",
                summary: "GS1 EPCIS 2.0 capture: an EPCISDocument or one event (JSON / JSON-LD); each quantity-carrying event becomes canonical events (docs/epcis.md).",
                params: vec![
                    query(
                        "location",
                        "The location of events that name neither bizLocation nor readPoint.",
                        json!({"type": "string"}),
                    ),
                    query(
                        "source",
                        "The sending system when authentication is off.",
                        json!({"type": "string"}),
                    ),
                ],
                body: Some(json!({"required": true, "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "application/ld+json": {"schema": {"type": "object"}},
                }})),
                responses: vec![
                    ok(
                        "Per EPCIS event: its canonical ids and outcomes, or why it was ignored or rejected.",
                        json!({"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": {"type": "object"}}}}),
                    ),
                    bad(),
                    error(
                        403,
                        "A read-only or operator token, or a token sending as another system.",
                    ),
                    error(413, "Body too large."),
                ],
                auth: true,
            },
        ),
        (
            "/v1/adapters/shopify/{channel}/inventory-levels",
            "post",
            Op {
                id: "shopifyInventoryLevels",
                tag: "channels",
                summary: "Shopify's inventory_levels/update webhook, signed with the channel's secret (X-Shopify-Hmac-Sha256): an observation of what the channel shows.",
                params: vec![path_param("channel", "A configured channel id.")],
                body: Some(json_body(
                    json!({"type": "object", "required": ["inventory_item_id", "location_id"], "properties": {
                    "inventory_item_id": {"type": "integer"}, "location_id": {"type": "integer"},
                    "available": {"type": ["integer", "null"]}, "updated_at": {"type": "string", "format": "date-time"},
                    "admin_graphql_api_id": {"type": "string"}}}),
                )),
                responses: vec![
                    ok(
                        "What the observation found (compared, untracked, ignored, unmapped, duplicate).",
                        json!({"type": "object"}),
                    ),
                    bad(),
                    error(401, "The signature does not match the channel's secret."),
                    error(403, "The channel has no secret to verify with."),
                    not_found("No such channel."),
                ],
                auth: false,
            },
        ),
        (
            "/v1/matrix",
            "get",
            Op {
                id: "getMatrix",
                tag: "matrix",
                summary: "The integration matrix: every hop with measured latencies against its SLA.",
                params: vec![],
                body: None,
                responses: vec![ok("The matrix.", schema_ref("Matrix"))],
                auth: true,
            },
        ),
        (
            "/v1/audits",
            "get",
            Op {
                id: "listAudits",
                tag: "audits",
                summary: "Stored drift audits, newest first, paged by id.",
                params: vec![
                    query(
                        "before",
                        "Only audits with an id below this.",
                        json!({"type": "integer"}),
                    ),
                    limit(50, 1000),
                ],
                body: None,
                responses: vec![ok("A page.", schema_ref("AuditPage")), bad()],
                auth: true,
            },
        ),
        (
            "/v1/audits/trend",
            "get",
            Op {
                id: "auditTrend",
                tag: "audits",
                summary: "Drift per hand-off over the last days, the degrading hand-off and the repair-or-rebuild reading (as `driftless trend`).",
                params: vec![query(
                    "days",
                    "The window in days (default 30).",
                    json!({"type": "integer", "minimum": 1, "maximum": 3660}),
                )],
                body: None,
                responses: vec![ok("The trend.", schema_ref("Trend")), bad()],
                auth: true,
            },
        ),
        (
            "/v1/audits/{id}",
            "get",
            Op {
                id: "getAudit",
                tag: "audits",
                summary: "One stored audit: its summary and the whole report.",
                params: vec![path_param("id", "An audit id.")],
                body: None,
                responses: vec![
                    ok("The audit.", schema_ref("Audit")),
                    bad(),
                    not_found("No such audit."),
                ],
                auth: true,
            },
        ),
        (
            "/healthz",
            "get",
            Op {
                id: "healthz",
                tag: "operations",
                summary: "The process answers.",
                params: vec![],
                body: None,
                responses: vec![ok("Alive.", schema_ref("Status"))],
                auth: false,
            },
        ),
        (
            "/readyz",
            "get",
            Op {
                id: "readyz",
                tag: "operations",
                summary: "The ledger answers.",
                params: vec![],
                body: None,
                responses: vec![
                    ok("Ready.", schema_ref("Status")),
                    ("503".into(), {
                        let mut r = json_body(schema_ref("Status"));
                        r["description"] = "Not ready.".into();
                        r
                    }),
                ],
                auth: false,
            },
        ),
        (
            "/metrics",
            "get",
            Op {
                id: "metrics",
                tag: "operations",
                summary: "Prometheus text format.",
                params: vec![],
                body: None,
                responses: vec![(
                    "200".into(),
                    json!({"description": "Metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}}),
                )],
                auth: false,
            },
        ),
        (
            "/openapi.json",
            "get",
            Op {
                id: "openapi",
                tag: "operations",
                summary: "This document.",
                params: vec![],
                body: None,
                responses: vec![ok("OpenAPI 3.1.", json!({"type": "object"}))],
                auth: false,
            },
        ),
        (
            "/api",
            "get",
            Op {
                id: "explorer",
                tag: "operations",
                summary: "An offline explorer of this document.",
                params: vec![],
                body: None,
                responses: vec![html("The explorer page.")],
                auth: false,
            },
        ),
        (
            "/",
            "get",
            Op {
                id: "dashboard",
                tag: "dashboard",
                summary: "The dashboard (asks for a token in the page).",
                params: vec![],
                body: None,
                responses: vec![html("The dashboard page.")],
                auth: false,
            },
        ),
        (
            "/assets/{file}",
            "get",
            Op {
                id: "dashboardAsset",
                tag: "dashboard",
                summary: "The dashboard's script and style sheet (embedded in the binary).",
                params: vec![path_param("file", "`app.js` or `app.css`.")],
                body: None,
                responses: vec![
                    (
                        "200".into(),
                        json!({"description": "The file.", "content": {"text/javascript": {"schema": {"type": "string"}}, "text/css": {"schema": {"type": "string"}}}}),
                    ),
                    ("404".into(), json!({"description": "No such file."})),
                ],
                auth: false,
            },
        ),
    ]
}

fn html(description: &str) -> (String, Value) {
    (
        "200".into(),
        json!({"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}),
    )
}

fn levels() -> Value {
    let int = json!({"type": "integer"});
    json!({"type": "object", "required": ["location", "on_hand", "committed", "reserved", "incoming", "unavailable", "available"],
        "properties": {"location": {"type": "string"}, "on_hand": int, "committed": int, "reserved": int,
            "incoming": int, "unavailable": int, "available": int}})
}

fn schemas() -> Value {
    let s = json!({"type": "string"});
    let ns = json!({"type": ["string", "null"]});
    let i = json!({"type": "integer"});
    let quantities = json!({"type": "object", "additionalProperties": {"type": "integer"},
        "propertyNames": {"enum": ["on_hand", "committed", "reserved", "incoming", "unavailable"]}});
    json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"], "properties": {
                "code": {"type": "string", "enum": ["invalid_request", "unauthorized", "forbidden", "not_found", "payload_too_large", "request_timeout", "overloaded", "shutting_down", "unavailable", "internal"]},
                "message": s}}}},
        "Status": {"type": "object", "required": ["status"], "properties": {"status": s}},
        "Event": {"type": "object", "required": ["id", "source", "sku", "location", "occurred_at"],
            "description": "The canonical event, version 1: exactly one of `adjust` or `set`.",
            "properties": {"id": s, "source": s, "sku": s, "location": s,
                "occurred_at": {"type": "string", "format": "date-time"}, "seq": i,
                "adjust": quantities, "set": quantities, "uom": s, "reason": s, "ref": s}},
        "EventResults": {"type": "object", "required": ["results"], "properties": {"results": {"type": "array", "items": {
            "type": "object", "required": ["id", "outcome"], "properties": {"id": s,
                "outcome": {"type": "string", "enum": ["applied", "duplicate", "conflict", "stale", "covered", "override", "rejected", "accepted"]},
                "reason": s}}}}},
        "Levels": levels(),
        "Inventory": {"type": "object", "required": ["sku", "locations", "channels"], "properties": {
            "sku": s, "locations": {"type": "array", "items": schema_ref("Levels")},
            "channels": {"type": "array", "items": {"type": "object", "required": ["channel", "quantity"], "properties": {"channel": s, "quantity": i}}},
            "version": {"type": ["integer", "null"], "description": "How many times the sku has changed (by then, with `at`): one more with every applied event or accepted override, so an unchanged version means an unchanged sku."},
            "at": {"type": "string", "format": "date-time", "description": "The instant asked for, with `at`."}}},
        "InventoryPage": {"type": "object", "required": ["items", "next_after"], "properties": {
            "items": {"type": "array", "items": schema_ref("Inventory")}, "next_after": ns}},
        "HistoryEntry": {"type": "object", "required": ["id", "source", "location", "occurred_at", "seq", "received_at", "outcome"], "properties": {
            "id": s, "source": s, "location": s, "occurred_at": {"type": "string", "format": "date-time"}, "seq": i,
            "received_at": {"type": "string", "format": "date-time"}, "outcome": s, "adjust": quantities, "set": quantities,
            "uom": ns, "reason": ns, "ref": ns, "detail": ns}},
        "History": {"type": "object", "required": ["sku", "entries"], "properties": {"sku": s, "entries": {"type": "array", "items": schema_ref("HistoryEntry")}}},
        "Incidents": {"type": "object", "required": ["incidents"], "properties": {"incidents": {"type": "array", "items": {
            "type": "object", "required": ["kind", "detail", "at"], "properties": {"kind": s, "sku": ns, "location": ns, "system": ns, "event_id": ns, "detail": s, "at": {"type": "string", "format": "date-time"}}}}}},
        "ChannelSummary": {"type": "object", "required": ["channel", "pending"], "properties": {"channel": s, "connector": s, "pending": i, "held": i, "dead_letters": i, "errors": i}},
        "Channel": {"type": "object", "required": ["channel", "pending"], "properties": {
            "channel": s, "connector": s, "on_override": s, "max_attempts": i, "pending": i,
            "last_push": {"type": ["object", "null"]}, "errors": {"type": "array", "items": {"type": "object"}},
            "held": {"type": "array", "items": s}, "dead_letters": {"type": "array", "items": {"type": "object"}}}},
        "Matrix": {"type": "object", "required": ["hops"], "properties": {"hops": {"type": "array", "items": {"type": "object"}}}},
        "AuditSummary": {"type": "object", "required": ["id", "at", "skus_compared", "drifting", "handoffs"], "properties": {
            "id": i, "at": {"type": "string", "format": "date-time"}, "skus_compared": i, "drifting": i,
            "handoffs": {"type": "array", "items": {"type": "object", "required": ["handoff", "drifting_skus", "abs_units"], "properties": {"handoff": s, "drifting_skus": i, "abs_units": i}}}}},
        "AuditPage": {"type": "object", "required": ["audits", "next_before"], "properties": {
            "audits": {"type": "array", "items": schema_ref("AuditSummary")}, "next_before": {"type": ["integer", "null"]}}},
        "Trend": {"type": "object", "required": ["days", "handoffs", "points", "reading", "svg"], "properties": {
            "days": i, "handoffs": {"type": "array", "items": s},
            "points": {"type": "array", "items": {"type": "object"}},
            "degrading": {"type": ["object", "null"], "properties": {"handoff": s, "per_day": {"type": "number"}}},
            "reading": s, "svg": {"type": "string", "description": "The trend drawn as an SVG chart."}}},
        "Audit": {"allOf": [schema_ref("AuditSummary"), {"type": "object", "required": ["report"], "properties": {"report": {"type": "object", "description": "The audit report, as `driftless audit --format json` writes it."}}}]},
    })
}

fn build() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for (path, method, op) in operations() {
        let entry = paths
            .entry(path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[method] = op.json();
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "driftless hub",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Events in, inventory and history out, fan-out to channels, the integration matrix and stored drift audits. Every `/v1` route needs a bearer token: a read token reads, a system's token also sends as that system.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(schemas.contains_key(&name), "{name} is not defined");
        }
    }
}
