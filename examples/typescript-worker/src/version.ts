// A workflow's version (docs/protocol.md §4): the first 16 hex digits of the SHA-256 of the
// RFC 8785 canonical JSON of exactly name, steps, on_events, schedule_timeout_s, on_failure,
// the steps sorted by name and each step's parents sorted (code-point order).
import { createHash } from "node:crypto";
import { createRequire } from "node:module";
import type { WorkflowMsg } from "./wire.js";

// canonicalize is CommonJS (`module.exports = serialize`): required, typed here.
const canonicalize = createRequire(import.meta.url)("canonicalize") as (
  input: unknown,
) => string | undefined;

export type Definition = Pick<
  WorkflowMsg,
  "name" | "steps" | "on_events" | "schedule_timeout_s" | "on_failure"
>;

export function workflowVersion(def: Definition): string {
  const body = {
    name: def.name,
    steps: [...def.steps]
      .map((step) => ({ ...step, parents: [...step.parents].sort() }))
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)),
    on_events: def.on_events,
    schedule_timeout_s: def.schedule_timeout_s,
    on_failure: def.on_failure,
  };
  const canonical = canonicalize(body);
  if (canonical === undefined) throw new Error("the definition has no JSON form");
  return createHash("sha256").update(canonical, "utf8").digest("hex").slice(0, 16);
}
