// The example worker: `node dist/main.js [workflows]`, workflows a comma list of diamond,
// sleep, flaky, fatal, timeout (or all), else NATCHET_TS_WORKFLOW (default diamond).
// NATCHET_TS_SLOTS (4), NATCHET_TS_NAME (ts-worker), NATCHET_WORKER_GRACE_SECONDS (30),
// NATCHET_TS_SLEEP_MS (30: the sleep step's default), and HATCHET_CLIENT_* (settings.ts).
import {
  definitionOf,
  NonRetryableError,
  Worker,
  type StepContext,
  type WorkflowSpec,
} from "./worker.js";
import { SettingsError } from "./settings.js";

type Obj = Record<string, unknown>;
const obj = (v: unknown): Obj => (v && typeof v === "object" ? (v as Obj) : {});
const num = (v: unknown, dflt: number): number => (typeof v === "number" ? v : dflt);

/** start -> left, right -> join: each step's output computed from its input and parents.
 * (Declared in any order: the registration writes them in the canonical one, §4.) */
export const diamond: WorkflowSpec = {
  name: "TsDiamond",
  onEvents: ["ts:diamond"],
  steps: [
    {
      name: "start",
      run: (ctx: StepContext) => {
        const n = num(obj(ctx.input).n, 0);
        ctx.log(`start: n=${n}`);
        return { n };
      },
    },
    {
      name: "right",
      parents: ["start"],
      run: (ctx: StepContext) => {
        const n = num(obj(ctx.parentOutputs.start).n, 0);
        ctx.log(`right: ${n} * 2`);
        return { v: n * 2 };
      },
    },
    {
      name: "left",
      parents: ["start"],
      run: (ctx: StepContext) => {
        const n = num(obj(ctx.parentOutputs.start).n, 0);
        ctx.log(`left: ${n} + 1`);
        return { v: n + 1 };
      },
    },
    {
      name: "join",
      parents: ["left", "right"],
      timeoutS: 30,
      run: (ctx: StepContext) => {
        const sum = num(obj(ctx.parentOutputs.left).v, 0) + num(obj(ctx.parentOutputs.right).v, 0);
        ctx.log(`join: sum=${sum} on ${ctx.workerName}`);
        return { sum };
      },
    },
  ],
};

/** One step sleeping `input.ms` (`input.redelivered_ms` on a redelivery). */
export const sleepy: WorkflowSpec = {
  name: "TsSleep",
  steps: [
    {
      name: "nap",
      timeoutS: 120,
      run: async (ctx: StepContext) => {
        const input = obj(ctx.input);
        const dflt = Number(process.env.NATCHET_TS_SLEEP_MS ?? "30");
        const base = num(input.ms, dflt);
        const ms = ctx.delivery > 1 ? num(input.redelivered_ms, base) : base;
        ctx.log(`nap ${ms} ms (delivery ${ctx.delivery})`);
        await ctx.sleep(ms);
        return { slept: ms };
      },
    },
  ],
};

/** Fails its first attempt, succeeds its second. */
export const flaky: WorkflowSpec = {
  name: "TsFlaky",
  steps: [
    {
      name: "flaky",
      retries: 1,
      run: (ctx: StepContext) => {
        if (ctx.attempt === 1) throw new Error(`flake on attempt ${ctx.attempt}`);
        return { attempt: ctx.attempt };
      },
    },
  ],
};

/** Fails for good at once, though it has retries. */
export const fatal: WorkflowSpec = {
  name: "TsFatal",
  steps: [
    {
      name: "fatal",
      retries: 2,
      run: () => {
        throw new NonRetryableError("this input can never work");
      },
    },
  ],
};

/** A step given half a second that needs longer: the worker stops it (a TimeoutError). */
export const slow: WorkflowSpec = {
  name: "TsTimeout",
  steps: [
    {
      name: "slow",
      timeoutS: 0.5,
      run: async (ctx: StepContext) => {
        await ctx.sleep(5000);
        return { finished: true };
      },
    },
  ],
};

const ALL: Record<string, WorkflowSpec> = { diamond, sleep: sleepy, flaky, fatal, timeout: slow };

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const printOnly = args[0] === "--definitions"; // print the workflow messages, connect to nothing
  if (printOnly) args.shift();
  const chosen = (args[0] ?? process.env.NATCHET_TS_WORKFLOW ?? "diamond").split(",");
  const names = chosen.includes("all") ? Object.keys(ALL) : chosen.map((s) => s.trim());
  const unknown = names.filter((n) => !ALL[n]);
  if (unknown.length) {
    throw new SettingsError(`unknown workflow ${unknown.join(", ")}: use ${Object.keys(ALL).join(", ")} or all`);
  }
  const specs = names.map((n) => ALL[n] as WorkflowSpec);
  if (printOnly) {
    process.stdout.write(JSON.stringify(specs.map(definitionOf)) + "\n");
    return 0;
  }
  const slots = Number(process.env.NATCHET_TS_SLOTS ?? "4");
  const graceS = Number(process.env.NATCHET_WORKER_GRACE_SECONDS ?? "30");
  if (!Number.isInteger(slots) || slots < 1) throw new SettingsError("NATCHET_TS_SLOTS: a positive integer");
  if (!(graceS >= 0)) throw new SettingsError("NATCHET_WORKER_GRACE_SECONDS: seconds, >= 0");
  // NATCHET_TS_PROTOCOL: announce another wire protocol (for testing a refusal).
  const protocol = process.env.NATCHET_TS_PROTOCOL ? Number(process.env.NATCHET_TS_PROTOCOL) : undefined;
  const name = process.env.NATCHET_TS_NAME || "ts-worker";
  const worker = new Worker({ name, slots, graceS, ...(protocol ? { protocol } : {}) });
  for (const spec of specs) worker.register(spec);
  return worker.start();
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`natchet-ts-worker: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(err instanceof SettingsError ? 2 : 1);
  },
);
