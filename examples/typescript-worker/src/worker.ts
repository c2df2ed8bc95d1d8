// A natchet worker from docs/protocol.md: plain NATS requests and publishes, nothing shared
// with the Python SDK. Section numbers (§) are the document's.
import { randomBytes } from "node:crypto";
import {
  AuthorizationError,
  connect,
  createInbox,
  Empty,
  InvalidArgumentError,
  type Msg,
  type NatsConnection,
  type Subscription,
} from "@nats-io/transport-node";
import { jetstream, JetStreamApiError, type JetStreamClient } from "@nats-io/jetstream";
import { settingsFromEnv, type Settings } from "./settings.js";
import { workflowVersion } from "./version.js";
import {
  isoNow,
  PROTOCOL,
  type AssignedMsg,
  type FinishedMsg,
  type HeartbeatMsg,
  type LogMsg,
  type RefusedMsg,
  type ResultMsg,
  type StepDef,
  type TaskMsg,
  type WorkerStatus,
  type WorkflowMsg,
} from "./wire.js";

export const SDK_VERSION = "natchet-ts-example 0.1.0";

const ACK_WAIT_MS = 5000; // the queue group's ack_wait (§4)
const WPI_EVERY_MS = ACK_WAIT_MS / 3; // keepalive (§6)
const PULL_EXPIRES_MS = 2000; // a pull request's life (§5)
const BEAT_EVERY_MS = 2000; // heartbeats (§8)
const ASSIGNED_AFTER_MS = 50; // a step still running then is announced (§6)
const LOG_LINE_CHARS = 8192;
const TRACEBACK_CHARS = 8000;
const EXIT_REFUSED = 76; // as the Python SDK (§8)
const EXIT_UNAUTHORIZED = 77; // as the Python SDK (§1)

/** Raise it from a step to fail the step at once, whatever retries are left. */
export class NonRetryableError extends Error {
  override name = "NonRetryableError";
}

export interface StepContext {
  readonly runId: string;
  readonly workflow: string;
  readonly step: string;
  readonly attempt: number;
  readonly delivery: number;
  readonly input: unknown;
  readonly parentOutputs: Record<string, unknown>;
  readonly stepErrors: Record<string, string>;
  readonly workerName: string;
  /** Aborted when the step must stop (timeout, run ended, hand-back). */
  readonly signal: AbortSignal;
  /** One log line (appended in order). */
  log(line: string): void;
  /** Wait, or reject as soon as the step must stop. */
  sleep(ms: number): Promise<void>;
}

export type StepFn = (ctx: StepContext) => unknown;

export interface StepSpec {
  name: string;
  run: StepFn;
  parents?: string[];
  timeoutS?: number;
  retries?: number;
  backoffFactor?: number | null;
  backoffMaxS?: number | null;
}

export interface WorkflowSpec {
  name: string;
  steps: StepSpec[];
  onEvents?: string[];
  scheduleTimeoutS?: number;
  onFailure?: Omit<StepSpec, "parents">;
}

interface Registered {
  msg: WorkflowMsg;
  fns: Map<string, StepFn>;
}

function stepDef(s: StepSpec): StepDef {
  return {
    name: s.name,
    parents: [...(s.parents ?? [])],
    timeout_s: s.timeoutS ?? 60,
    retries: s.retries ?? 0,
    backoff_factor: s.backoffFactor ?? null,
    backoff_max_s: s.backoffMaxS ?? null,
  };
}

/**
 * The steps in the one order every worker writes them (the version hashes the list, so the
 * order matters): in rounds, each round the steps whose parents are all placed, sorted by
 * name. Throws on an unknown parent or a cycle.
 */
export function stepOrder(workflow: string, steps: StepDef[]): StepDef[] {
  const byName = new Map(steps.map((s) => [s.name, s]));
  if (byName.size !== steps.length) throw new Error(`workflow ${workflow}: two steps share a name`);
  for (const s of steps) {
    for (const p of s.parents) {
      if (!byName.has(p)) throw new Error(`workflow ${workflow}: step ${s.name} has unknown parent ${p}`);
    }
  }
  const order: StepDef[] = [];
  const done = new Set<string>();
  while (order.length < steps.length) {
    const ready = steps
      .filter((s) => !done.has(s.name) && s.parents.every((p) => done.has(p)))
      .map((s) => s.name)
      .sort();
    if (ready.length === 0) throw new Error(`workflow ${workflow}: its steps form a cycle`);
    for (const n of ready) {
      order.push(byName.get(n) as StepDef);
      done.add(n);
    }
  }
  return order;
}

/** The `workflow` message for a spec, with its version (§4). */
export function definitionOf(spec: WorkflowSpec): WorkflowMsg {
  const def = {
    name: spec.name,
    steps: stepOrder(spec.name, spec.steps.map(stepDef)),
    on_events: [...(spec.onEvents ?? [])],
    schedule_timeout_s: spec.scheduleTimeoutS ?? 300,
    on_failure: spec.onFailure ? stepDef(spec.onFailure) : null,
  };
  return { ...def, version: workflowVersion(def), registered_at: isoNow(), v: 1 };
}

/** Why a running step was stopped from outside. */
type StopKind = "timeout" | "cancelled" | "handback";

class Stop extends Error {
  constructor(readonly kind: StopKind) {
    super(kind);
  }
}

/** The delivery number of a task, from its reply subject `$JS.ACK...` (§5). */
export function deliveryOf(reply: string): number {
  const t = reply.split(".");
  if (t[0] !== "$JS" || t[1] !== "ACK") return 1;
  // $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<tm>.<pending> (9 tokens), or
  // $JS.ACK.<domain>.<account hash>.<stream>.<consumer>.<delivered>... (12 tokens).
  const idx = t.length === 9 ? 4 : 6;
  const n = Number(t[idx]);
  return Number.isInteger(n) && n > 0 ? n : 1;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function errorText(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return `Error: ${String(err)}`;
}

function stackText(err: unknown): string | null {
  if (!(err instanceof Error) || !err.stack) return null;
  const s = err.stack;
  return s.length <= TRACEBACK_CHARS ? s : "..." + s.slice(-TRACEBACK_CHARS);
}

/** A pull request still open: how many of the tasks it asked for have not come yet. */
interface Pull {
  sub: Subscription;
  remaining: number;
  fallback: NodeJS.Timeout;
}

interface Running {
  runId: string;
  ac: AbortController;
}

export interface WorkerOptions {
  name: string;
  slots: number;
  graceS?: number;
  settings?: Settings;
  /** The wire protocol announced (tests announce another to be refused). */
  protocol?: number;
  log?: (line: string) => void;
}

export class Worker {
  readonly id = randomBytes(6).toString("hex");
  readonly name: string;
  readonly slots: number;
  private readonly graceMs: number;
  private readonly settings: Settings;
  private readonly say: (line: string) => void;
  private readonly workflows = new Map<string, Registered>();
  private nc!: NatsConnection;
  private js!: JetStreamClient;
  private prefix = ""; // `T.NS`
  private startedAt = isoNow();
  private status: WorkerStatus = "ACTIVE";
  private stopping = false;
  private held = 0; // tasks received and not settled yet
  private readonly pulls = new Set<Pull>();
  private readonly running = new Set<Running>();
  private readonly ended = new Set<string>(); // runs heard to have finished (bounded)
  private lastReconnect = 0;
  private pullBackoffUntil = 0;
  private turn = 0;
  private pumpTimer: NodeJS.Timeout | undefined;
  private beatTimer: NodeJS.Timeout | undefined;
  private waiters: Array<() => void> = [];
  private exitCode = 0;
  private done!: Promise<number>;
  private finish!: (code: number) => void;
  private maxBody = 1024 * 1024 - 1024;
  private readonly protocol: number;

  constructor(opts: WorkerOptions) {
    this.name = opts.name;
    this.slots = opts.slots;
    this.graceMs = (opts.graceS ?? 30) * 1000;
    this.protocol = opts.protocol ?? PROTOCOL;
    this.settings = opts.settings ?? settingsFromEnv(opts.name);
    this.say = opts.log ?? ((line) => process.stderr.write(`[${this.name}] ${line}\n`));
    this.done = new Promise((resolve) => (this.finish = resolve));
  }

  register(spec: WorkflowSpec): WorkflowMsg {
    const msg = definitionOf(spec);
    const fns = new Map<string, StepFn>(spec.steps.map((s) => [s.name, s.run]));
    if (spec.onFailure) fns.set(spec.onFailure.name, spec.onFailure.run);
    this.workflows.set(spec.name, { msg, fns });
    return msg;
  }

  /** Connect, register, and serve until stopped: resolves to the process's exit code. */
  async start(): Promise<number> {
    const { tenant, namespace } = this.settings;
    this.prefix = `${tenant}.${namespace}`;
    try {
      this.nc = await connect(this.settings.connect);
    } catch (err) {
      if (err instanceof AuthorizationError || /authori[sz]ation/i.test(String(err))) {
        this.say(`natchet: the NATS server refused the credentials: ${String(err)}`);
        return EXIT_UNAUTHORIZED;
      }
      throw err;
    }
    this.js = jetstream(this.nc, { timeout: 5000 });
    this.maxBody = this.nc.info ? this.nc.info.max_payload - 1024 : this.maxBody;
    void this.watchConnection();

    // §7 and §8: what the worker hears, from start to stop.
    this.nc.subscribe(`${this.prefix}.runs.*.finished`, { callback: (_e, m) => this.onFinished(m) });
    this.nc.subscribe(`${this.prefix}.workers.${this.id}.refused`, {
      callback: (_e, m) => this.onRefused(m),
    });
    await this.nc.flush();

    // §4: register every workflow (an append, with its dedup id).
    for (const { msg } of this.workflows.values()) {
      await this.append(`${this.prefix}.workflows.${msg.name}`, msg, {
        msgID: `workflow:${namespace}:${msg.name}:${msg.version}`,
      });
      this.say(`registered ${msg.name} version ${msg.version}`);
    }
    this.startedAt = isoNow();
    await this.beat();
    this.beatTimer = setInterval(() => void this.beat(), BEAT_EVERY_MS);
    for (const sig of ["SIGTERM", "SIGINT"] as const) {
      process.on(sig, () => {
        this.say(`${sig}: handing back what does not finish within ${this.graceMs / 1000}s`);
        void this.shutdown(this.graceMs, 0);
      });
    }
    this.say(`worker ${this.id} ready (${this.slots} slots)`);
    this.pump();
    return this.done;
  }

  // ---- §3 appends ---------------------------------------------------------------------

  /** Append until stored (same dedup id on every try); false when it cannot be stored. */
  private async append(
    subject: string,
    body: unknown,
    opts: { msgID?: string; ttl?: string; once?: boolean } = {},
  ): Promise<boolean> {
    const payload = JSON.stringify(body);
    let wait = 100;
    for (;;) {
      try {
        await this.js.publish(subject, payload, {
          timeout: 5000,
          ...(opts.msgID ? { msgID: opts.msgID } : {}),
          ...(opts.ttl ? { ttl: opts.ttl } : {}),
        });
        return true;
      } catch (err) {
        if (err instanceof JetStreamApiError || err instanceof InvalidArgumentError) {
          this.say(`not stored, for good: ${subject}: ${String(err)}`);
          return false;
        }
        if (this.nc.isClosed() || opts.once) return false;
        // a timeout, or no responders (the engine has not set the tenant up yet)
        await sleep(wait);
        wait = Math.min(wait * 2, 5000);
      }
    }
  }

  // ---- §8 heartbeats --------------------------------------------------------------------

  private async beat(): Promise<void> {
    const actions: string[] = [];
    for (const [wf, { fns }] of this.workflows) for (const step of fns.keys()) actions.push(`${wf}:${step}`);
    const hb: HeartbeatMsg = {
      worker_id: this.id,
      name: this.name,
      actions,
      slots: this.slots,
      running: this.held,
      status: this.status,
      started_at: this.startedAt,
      at: isoNow(),
      sdk_version: SDK_VERSION,
      protocol: this.protocol,
      v: 1,
    };
    await this.append(`${this.prefix}.workers.${this.id}`, hb, { ttl: "300s", once: true });
  }

  private onRefused(m: Msg): void {
    let reason = "the engine refused this worker";
    try {
      reason = (m.json() as RefusedMsg).reason || reason;
    } catch {
      // a body we cannot read still means refused
    }
    if (this.exitCode === EXIT_REFUSED) return;
    this.say(`natchet: ${reason}`);
    this.exitCode = EXIT_REFUSED;
    void this.shutdown(0, EXIT_REFUSED);
  }

  private async watchConnection(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (s.type === "reconnect") this.lastReconnect = Date.now();
      if (s.type === "error") this.say(`nats: ${String(s.error)}`);
      if (s.type === "error" && s.error instanceof AuthorizationError) {
        this.say(`natchet: the NATS server refused the credentials: ${String(s.error)}`);
        this.exitCode = EXIT_UNAUTHORIZED;
      }
    }
    // the iterator ends when the connection closes
    if (!this.stopping) {
      this.say("natchet: the NATS connection closed");
      this.finish(this.exitCode || 1);
    }
  }

  // ---- §5 pulling exactly the free slots ------------------------------------------------

  private outstanding(): number {
    let n = 0;
    for (const p of this.pulls) n += p.remaining;
    return n;
  }

  /** Ask the queue groups for the slots neither busy nor already asked for. */
  private pump(): void {
    if (this.stopping || this.nc.isClosed()) return;
    const now = Date.now();
    if (now < this.pullBackoffUntil) {
      if (!this.pumpTimer) {
        this.pumpTimer = setTimeout(() => {
          this.pumpTimer = undefined;
          this.pump();
        }, this.pullBackoffUntil - now);
      }
      return;
    }
    let free = this.slots - this.held - this.outstanding();
    if (free <= 0) return;
    // Several workflows share the slots: deal the free ones out in turn.
    const wfs = [...this.workflows.keys()];
    const share = new Map<string, number>();
    for (let i = 0; free > 0; i++, free--) {
      const wf = wfs[(this.turn + i) % wfs.length];
      if (wf !== undefined) share.set(wf, (share.get(wf) ?? 0) + 1);
    }
    this.turn += 1;
    for (const [wf, n] of share) this.pull(wf, n);
  }

  private pull(workflow: string, batch: number): void {
    const inbox = createInbox(this.settings.connect.inboxPrefix);
    const pull: Pull = {
      remaining: batch,
      sub: this.nc.subscribe(inbox, { callback: (_e, m) => this.onPulled(pull, m) }),
      // the request's end is a status message; should it never come, forget it after this
      fallback: setTimeout(() => this.endPull(pull), PULL_EXPIRES_MS + 5000),
    };
    this.pulls.add(pull);
    const stream = `tasks-${this.settings.tenant}`;
    const consumer = `${this.settings.namespace}~${workflow}`;
    const req = JSON.stringify({ batch, expires: PULL_EXPIRES_MS * 1_000_000 });
    this.nc.publish(`$JS.API.CONSUMER.MSG.NEXT.${stream}.${consumer}`, req, { reply: inbox });
  }

  private endPull(pull: Pull): void {
    if (!this.pulls.delete(pull)) return;
    clearTimeout(pull.fallback);
    pull.sub.unsubscribe();
    pull.remaining = 0;
    this.changed();
  }

  private onPulled(pull: Pull, m: Msg): void {
    const code = m.headers?.code ?? 0;
    if (m.data.length === 0 && code >= 100) {
      // a status message: 100 idle heartbeat, 404/408 the request ended, 409 ended, 503
      if (code === 100) return;
      if (code === 503) this.pullBackoffUntil = Date.now() + 200;
      this.endPull(pull); // whatever did not come is free again
      return;
    }
    if (!this.pulls.has(pull)) {
      // a task for a request already forgotten: give it back
      if (m.reply) this.nc.publish(m.reply, "-NAK");
      return;
    }
    pull.remaining -= 1;
    this.held += 1;
    if (pull.remaining <= 0) this.endPull(pull);
    void this.onTask(m).finally(() => {
      this.held -= 1;
      this.changed();
    });
  }

  /** Slots or requests changed: ask again, and wake whoever waits for a change. */
  private changed(): void {
    this.pump();
    const w = this.waiters;
    this.waiters = [];
    for (const wake of w) wake();
  }

  private async until(cond: () => boolean, ms: number): Promise<boolean> {
    const end = Date.now() + ms;
    while (!cond()) {
      const left = end - Date.now();
      if (left <= 0) return false;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 100));
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
    return true;
  }

  // ---- §5 before running a task -----------------------------------------------------------

  private async onTask(m: Msg): Promise<void> {
    const reply = m.reply;
    if (!reply) return;
    const settle = (body: string): void => this.nc.publish(reply, body);
    if (this.stopping) return settle("-NAK"); // §9: to another worker at once
    let task: TaskMsg;
    try {
      task = m.json() as TaskMsg;
      if (typeof task.run_id !== "string" || typeof task.step !== "string") throw new Error("not a task");
    } catch (err) {
      this.say(`a task that does not decode (${String(err)}): terminated`);
      return settle("+TERM");
    }
    const wf = this.workflows.get(task.workflow);
    const fn = wf?.fns.get(task.step);
    if (!wf || !fn) {
      this.say(`task of ${task.workflow}:${task.step}, a step this worker does not have: terminated`);
      return settle("+TERM");
    }
    if (task.workflow_version && task.workflow_version !== wf.msg.version) {
      return settle(`-NAK ${JSON.stringify({ delay: 2_000_000_000 })}`);
    }
    const delivery = deliveryOf(reply);
    const deadline = task.schedule_deadline ? Date.parse(task.schedule_deadline) : NaN;
    if (delivery === 1 && deadline < Date.now()) {
      this.say(`${task.run_id}:${task.step}: past its schedule deadline, the engine failed it`);
      return settle("+ACK");
    }
    if (await this.runEnded(task, delivery)) {
      this.say(`${task.run_id}:${task.step}: the run is over, not run`);
      return settle("+ACK");
    }
    if (this.stopping) return settle("-NAK");
    await this.run(task, fn, delivery, reply, deadline);
  }

  /** Is the run over (§7)? Heard on the subscription, or asked of the log when unsure. */
  private async runEnded(task: TaskMsg, delivery: number): Promise<boolean> {
    if (this.ended.has(task.run_id)) return true;
    const queued = task.queued_at ? Date.parse(task.queued_at) : Date.now();
    const unsure =
      delivery > 1 || Date.now() - queued > 10_000 || Date.now() - this.lastReconnect < 30_000;
    if (!unsure) return false;
    const t = this.settings.tenant;
    const subject = `${this.prefix}.runs.${task.run_id}.finished`;
    try {
      const r = await this.nc.request(`$JS.API.DIRECT.GET.natchet-${t}.${subject}`, Empty, {
        timeout: 2000,
      });
      return !!r.headers?.get("Nats-Sequence") && (r.headers?.code ?? 0) < 300;
    } catch {
      return false; // when unsure, run the step: at least once beats never
    }
  }

  private onFinished(m: Msg): void {
    const runId = m.subject.split(".")[3];
    if (!runId) return;
    try {
      const f = m.json() as FinishedMsg;
      if (f.run_id && f.run_id !== runId) return; // the subject is the truth
    } catch {
      // the subject says enough
    }
    this.ended.add(runId);
    if (this.ended.size > 20_000) {
      const first = this.ended.values().next().value;
      if (first !== undefined) this.ended.delete(first);
    }
    for (const r of this.running) if (r.runId === runId) r.ac.abort(new Stop("cancelled"));
  }

  // ---- §6 running a step ------------------------------------------------------------------

  private async run(
    task: TaskMsg,
    fn: StepFn,
    delivery: number,
    reply: string,
    deadline: number,
  ): Promise<void> {
    const runs = `${this.prefix}.runs.${task.run_id}`;
    const key = `${task.run_id}:${task.step}:${task.attempt}:${delivery}`;
    const base = { run_id: task.run_id, step: task.step, attempt: task.attempt, delivery };
    const startedAt = isoNow();
    const ac = new AbortController();
    const me: Running = { runId: task.run_id, ac };
    this.running.add(me);

    // Appends of one delivery go in order: assigned, logs, then the result.
    let chain: Promise<unknown> = Promise.resolve();
    const later = (fnc: () => Promise<unknown>): void => {
      chain = chain.then(fnc, fnc);
    };
    let assigned = false;
    const announce = (): void => {
      if (assigned) return;
      assigned = true;
      const msg: AssignedMsg = {
        ...base,
        worker_id: this.id,
        worker_name: this.name,
        started_at: startedAt,
        v: 1,
      };
      later(() => this.append(`${runs}.assigned`, msg, { msgID: `${key}:assigned` }));
    };
    if (deadline - Date.now() < 1000) {
      announce();
      await chain;
    }
    const assignTimer = setTimeout(announce, ASSIGNED_AFTER_MS);
    const wpi = setInterval(() => this.nc.publish(reply, "+WPI"), WPI_EVERY_MS);
    const timeout = setTimeout(() => ac.abort(new Stop("timeout")), task.timeout_s * 1000);
    let lines = 0;
    const ctx: StepContext = {
      runId: task.run_id,
      workflow: task.workflow,
      step: task.step,
      attempt: task.attempt,
      delivery,
      input: task.input,
      parentOutputs: task.parent_outputs ?? {},
      stepErrors: task.step_errors ?? {},
      workerName: this.name,
      signal: ac.signal,
      log: (line: string) => {
        lines += 1;
        const msg: LogMsg = { ...base, line: String(line).slice(0, LOG_LINE_CHARS), at: isoNow(), v: 1 };
        const id = `${key}:log:${lines}`;
        later(() => this.append(`${runs}.log`, msg, { msgID: id }));
      },
      sleep: (ms: number) =>
        new Promise<void>((resolve, reject) => {
          if (ac.signal.aborted) return reject(ac.signal.reason);
          const t = setTimeout(resolve, ms);
          ac.signal.addEventListener("abort", () => {
            clearTimeout(t);
            reject(ac.signal.reason);
          });
        }),
    };

    type Outcome = { ok: true; output: unknown } | { ok: false; err: unknown };
    const stopped = new Promise<Outcome>((resolve) =>
      ac.signal.addEventListener("abort", () => resolve({ ok: false, err: ac.signal.reason })),
    );
    const ran = (async (): Promise<Outcome> => {
      try {
        return { ok: true, output: await fn(ctx) };
      } catch (err) {
        return { ok: false, err };
      }
    })();
    // A step stopped from outside is abandoned: its signal is aborted, its result ignored.
    const outcome = await Promise.race([ran, stopped]);
    clearTimeout(assignTimer);
    clearTimeout(timeout);
    this.running.delete(me);
    if (!ac.signal.aborted) ac.abort(new Stop("timeout")); // stop whatever the step left

    const result: ResultMsg = {
      ...base,
      worker_id: this.id,
      worker_name: this.name,
      ok: outcome.ok,
      output: outcome.ok ? (outcome.output ?? null) : null,
      error: null,
      traceback: null,
      non_retryable: false,
      handed_back: false,
      started_at: startedAt,
      finished_at: isoNow(),
      v: 1,
    };
    let settle = "+ACK";
    if (!outcome.ok) {
      const err = outcome.err;
      if (err instanceof Stop && err.kind === "timeout") {
        result.error = `TimeoutError: step timed out after ${task.timeout_s}s`;
      } else if (err instanceof Stop && err.kind === "cancelled") {
        result.error = "cancelled: the run ended while this step was running";
      } else if (err instanceof Stop && err.kind === "handback") {
        result.error = "handed back: the worker shut down before finishing";
        result.handed_back = true;
        settle = "-NAK";
      } else {
        result.error = errorText(err);
        result.traceback = stackText(err);
        result.non_retryable = err instanceof NonRetryableError;
      }
    }
    let body = JSON.stringify(result);
    if (body === undefined || Buffer.byteLength(body) > this.maxBody) {
      const size = body === undefined ? 0 : Buffer.byteLength(body);
      Object.assign(result, {
        ok: false,
        output: null,
        non_retryable: true,
        error:
          body === undefined
            ? "step output is not JSON"
            : `step output is too large (${size} bytes with its result; the log takes ${this.maxBody})`,
      });
      body = JSON.stringify(result);
    }
    // The logs first, then the result; +WPI goes on until it is stored, so a slow append
    // does not let the task go to another worker.
    await chain;
    const stored = await this.append(`${runs}.result`, result, { msgID: `${key}:result` });
    clearInterval(wpi);
    // Unstored (the connection closed): settle nothing; the task is delivered again.
    if (stored) this.nc.publish(reply, settle);
  }

  // ---- §9 stopping ------------------------------------------------------------------------

  async shutdown(graceMs: number, code: number): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.exitCode = this.exitCode || code;
    this.status = "STOPPING";
    void this.beat();
    if (this.pumpTimer) clearTimeout(this.pumpTimer);
    await this.until(() => this.running.size === 0, graceMs);
    for (const r of this.running) r.ac.abort(new Stop("handback"));
    await this.until(() => this.held === 0, 15_000);
    // Requests still open end within their expiry; what they bring is given back (-NAK).
    await this.until(() => this.pulls.size === 0, PULL_EXPIRES_MS + 1000);
    for (const p of [...this.pulls]) this.endPull(p);
    if (this.beatTimer) clearInterval(this.beatTimer);
    this.status = "STOPPED";
    await this.beat();
    try {
      await this.nc.drain();
    } catch {
      // already closed
    }
    this.say(`stopped (exit ${this.exitCode})`);
    this.finish(this.exitCode);
  }
}
