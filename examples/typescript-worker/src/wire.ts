// The message bodies of natchet's wire protocol 1, written by hand from docs/protocol.md
// (and the JSON Schemas it names). Readers ignore unknown fields; every body carries "v".

/** The wire protocol this worker speaks (announced in every heartbeat). */
export const PROTOCOL = 1;

/** A step of a workflow definition: all six keys are always written (they are hashed). */
export interface StepDef {
  name: string;
  parents: string[];
  timeout_s: number;
  retries: number;
  backoff_factor: number | null;
  backoff_max_s: number | null;
}

/** `T.NS.workflows.WF`: a registration. */
export interface WorkflowMsg {
  name: string;
  version: string;
  steps: StepDef[];
  on_events: string[];
  on_failure: StepDef | null;
  /** Issue 14: run after the DAG succeeded; hashed only when set (this worker sends none). */
  on_success?: StepDef | null;
  /** Issue 14: a CEL expression an event must satisfy; hashed only when set. */
  event_filter?: string | null;
  schedule_timeout_s: number;
  registered_at: string;
  v: 1;
}

/** `T.NS.tasks.WF.STEP`: what a worker pulls from the workflow's queue group. */
export interface TaskMsg {
  run_id: string;
  workflow: string;
  step: string;
  attempt: number;
  input: unknown;
  parent_outputs: Record<string, unknown>;
  timeout_s: number;
  queued_at?: string;
  workflow_version?: string;
  step_errors?: Record<string, string>;
  schedule_deadline?: string | null;
  v?: number;
}

/** `T.NS.runs.RUN.assigned`: a step still running after a moment. */
export interface AssignedMsg {
  run_id: string;
  step: string;
  attempt: number;
  delivery: number;
  worker_id: string;
  worker_name: string;
  started_at: string;
  v: 1;
}

/** `T.NS.runs.RUN.log`: one line a step wrote. */
export interface LogMsg {
  run_id: string;
  step: string;
  attempt: number;
  delivery: number;
  line: string;
  at: string;
  v: 1;
}

/** `T.NS.runs.RUN.result`: what one delivery of an attempt returned or raised. */
export interface ResultMsg {
  run_id: string;
  step: string;
  attempt: number;
  delivery: number;
  worker_id: string;
  worker_name: string;
  ok: boolean;
  output: unknown;
  error: string | null;
  traceback: string | null;
  non_retryable: boolean;
  handed_back: boolean;
  started_at: string;
  finished_at: string;
  v: 1;
}

export type WorkerStatus = "ACTIVE" | "STOPPING" | "STOPPED";

/** `T.NS.workers.WID`: a heartbeat (appended with header `Nats-TTL: 300s`). */
export interface HeartbeatMsg {
  worker_id: string;
  name: string;
  actions: string[];
  slots: number;
  running: number;
  status: WorkerStatus;
  started_at: string;
  at: string;
  sdk_version: string;
  protocol: number;
  v: 1;
}

/** `T.NS.workers.WID.refused`: the engine will not serve this worker. */
export interface RefusedMsg {
  worker_id: string;
  reason: string;
  protocol: number;
  accepted: number[];
  engine_version?: string;
  at?: string;
  v?: number;
}

/** `T.NS.runs.RUN.finished`: a run ended (only `run_id` and `status` are read here). */
export interface FinishedMsg {
  run_id: string;
  status: "SUCCEEDED" | "FAILED" | "CANCELLED";
  error?: string | null;
  at?: string;
  v?: number;
}

/** JetStream's answer to an append. */
export interface PubAckMsg {
  stream?: string;
  seq?: number;
  duplicate?: boolean;
  error?: { code: number; err_code?: number; description: string };
}

/** ISO-8601 in UTC with an offset and microseconds, as the Python side writes them. */
export function isoNow(d: Date = new Date()): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, ".$1000+00:00");
}
