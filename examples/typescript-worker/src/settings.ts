// Where to connect, from the environment (docs/protocol.md §1).
import { readFileSync } from "node:fs";
import type { ConnectionOptions, TlsOptions } from "@nats-io/transport-node";

export interface Settings {
  tenant: string;
  namespace: string;
  connect: ConnectionOptions;
}

const TENANT_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;
const NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;

export class SettingsError extends Error {
  override name = "SettingsError";
}

/** The tenant and NATS url a token names: `nct_<base64url JSON payload>.<secret>`. */
export function decodeToken(token: string): { tenant: string; url: string } {
  const m = /^nct_([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+$/.exec(token.trim());
  if (!m || m[1] === undefined) {
    throw new SettingsError("HATCHET_CLIENT_TOKEN is not a natchet token (nct_<payload>.<secret>)");
  }
  let payload: unknown;
  try {
    payload = JSON.parse(Buffer.from(m[1], "base64url").toString("utf8"));
  } catch {
    throw new SettingsError("HATCHET_CLIENT_TOKEN: its payload is not base64url JSON");
  }
  const p = payload as { t?: unknown; u?: unknown };
  if (typeof p.t !== "string" || typeof p.u !== "string") {
    throw new SettingsError("HATCHET_CLIENT_TOKEN: its payload lacks the tenant (t) or url (u)");
  }
  return { tenant: p.t, url: p.u };
}

function tlsFromEnv(env: NodeJS.ProcessEnv): TlsOptions | undefined {
  const strategy = (env.HATCHET_CLIENT_TLS_STRATEGY ?? "none").toLowerCase();
  if (strategy === "none" || strategy === "") return undefined;
  if (strategy !== "tls" && strategy !== "mtls") {
    throw new SettingsError(`HATCHET_CLIENT_TLS_STRATEGY=${strategy}: use none, tls or mtls`);
  }
  const tls: TlsOptions = {};
  const ca = env.HATCHET_CLIENT_TLS_ROOT_CA_FILE;
  if (ca) tls.ca = readFileSync(ca, "utf8");
  if (strategy === "mtls") {
    const cert = env.HATCHET_CLIENT_TLS_CERT_FILE;
    const key = env.HATCHET_CLIENT_TLS_KEY_FILE;
    if (!cert || !key) {
      throw new SettingsError("mtls needs HATCHET_CLIENT_TLS_CERT_FILE and HATCHET_CLIENT_TLS_KEY_FILE");
    }
    tls.cert = readFileSync(cert, "utf8");
    tls.key = readFileSync(key, "utf8");
  }
  // HATCHET_CLIENT_TLS_SERVER_NAME: Node's TLS checks the host of the url; set the url's
  // host to that name to check another (the JavaScript client has no separate option).
  return tls;
}

export function settingsFromEnv(name: string, env: NodeJS.ProcessEnv = process.env): Settings {
  const namespace = env.HATCHET_CLIENT_NAMESPACE || "default";
  if (!NAME_RE.test(namespace)) {
    throw new SettingsError(`HATCHET_CLIENT_NAMESPACE=${namespace}: use 1-64 of A-Za-z0-9_-`);
  }
  const tls = tlsFromEnv(env);
  const token = env.HATCHET_CLIENT_TOKEN;
  let tenant: string;
  const connect: ConnectionOptions = { name, maxReconnectAttempts: -1 };
  if (token) {
    const decoded = decodeToken(token);
    tenant = decoded.tenant;
    connect.servers = decoded.url;
    connect.token = token.trim(); // the whole token is the NATS connect token
  } else {
    const hostPort = env.HATCHET_CLIENT_HOST_PORT;
    const t = env.HATCHET_CLIENT_TENANT_ID;
    if (!hostPort || !t) {
      throw new SettingsError(
        "set HATCHET_CLIENT_TOKEN, or HATCHET_CLIENT_HOST_PORT and HATCHET_CLIENT_TENANT_ID",
      );
    }
    tenant = t;
    connect.servers = hostPort.includes("://") ? hostPort : `nats://${hostPort}`;
  }
  if (!TENANT_RE.test(tenant)) {
    throw new SettingsError(`tenant ${tenant}: use [a-z0-9][a-z0-9_-]{0,31}`);
  }
  if (tls) connect.tls = tls;
  return { tenant, namespace, connect };
}
