// A workflow's version (docs/protocol.md §4): the first 16 hex digits of the SHA-256 of the
// RFC 8785 canonical JSON of exactly name, steps, on_events, schedule_timeout_s, on_failure,
// and on_success and event_filter only when they are set (not null: a definition without them
// keeps the version it always had), the steps sorted by name and each step's parents sorted
// (code-point order).
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import type { WorkflowMsg } from "./wire.js";

// canonicalize is CommonJS (`module.exports = serialize`): required, typed here.
const canonicalize = createRequire(import.meta.url)("canonicalize") as (
  input: unknown,
) => string | undefined;

export type Definition = Pick<
  WorkflowMsg,
  | "name"
  | "steps"
  | "on_events"
  | "schedule_timeout_s"
  | "on_failure"
  | "on_success"
  | "event_filter"
>;

export function workflowVersion(def: Definition): string {
  const body: Record<string, unknown> = {
    name: def.name,
    steps: [...def.steps]
      .map((step) => ({ ...step, parents: [...step.parents].sort() }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    on_events: def.on_events,
    schedule_timeout_s: def.schedule_timeout_s,
    on_failure: def.on_failure,
  };
  if (def.on_success != null) body.on_success = def.on_success;
  if (def.event_filter != null) body.event_filter = def.event_filter;
  const canonical = canonicalize(body);
  if (canonical === undefined) throw new Error("the definition has no JSON form");
  return createHash("sha256").update(canonical, "utf8").digest("hex").slice(0, 16);
}
