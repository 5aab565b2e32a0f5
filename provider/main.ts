// The mailinfra resource provider plugin, served to the Pulumi engine over gRPC.
// Started by the engine through ./pulumi-resource-mailinfra (see Pulumi.yaml `plugins`).
import * as crypto from "crypto";
import * as provider from "@pulumi/pulumi/provider";
import * as path from "path";
import { isDeepStrictEqual } from "util";
import { readStackFile } from "../lib/stackFile";
import { closeAllSessions } from "./ssh";
import { isSecret, kinds, ResourceKind, unwrapSecrets } from "./resources";

export const PROVIDER_VERSION = "0.1.0";

function typeOf(urn: string): string {
    const chain = urn.split("::")[2] ?? "";
    return chain.split("$").pop() ?? "";
}

function kindOf(urn: string): ResourceKind {
    const k = kinds[typeOf(urn)];
    if (!k) throw new Error(`mailinfra provider: unknown resource type in ${urn}`);
    return k;
}

/** Fields of `connection` that identify the target host; key material and host key pins may rotate freely (a re-pin replaces nothing). */
function hostIdentity(props: any) {
    const c = unwrapSecrets(props?.connection) ?? {};
    return { host: c.host, port: c.port ?? 22, user: c.user ?? "root" };
}

/** Current pins by address, per stack: read once per provider process from the stack's config. */
const currentPins = new Map<string, Map<string, { name: string; hostKeys: string[] }>>();

/**
 * The host keys a connection accepts come from the stack's current config, not from the resource's state: after a
 * re-pin, refresh and delete (which only see state) trust the new key at once and no longer the old one. Only a host
 * that has left the config keeps the pins recorded with its resources.
 */
function withCurrentPins(urn: string, props: any): any {
    const c = props?.connection;
    if (!c || c.host === "local") return props;
    const stack = urn.split("::")[0].split(":").pop() ?? "";
    let pins = currentPins.get(stack);
    if (!pins) {
        const cfg = readStackFile(path.resolve(__dirname, ".."), stack);
        pins = new Map(Object.entries(cfg.hosts).map(([name, h]) => [h.address, { name, hostKeys: h.sshHostKeys ?? [] }]));
        currentPins.set(stack, pins);
    }
    const current = pins.get(c.host);
    return current ? { ...props, connection: { ...c, ...current, stack } } : props;
}

/** A hash of secret content would let anyone with the state brute-force a weak secret: drop it. */
function publicOutputs(inputs: any, outs: Record<string, unknown>): Record<string, unknown> {
    return isSecret(inputs?.content) ? Object.fromEntries(Object.entries(outs).filter(([k]) => k !== "sha256")) : outs;
}

const mailinfraProvider: provider.Provider = {
    version: PROVIDER_VERSION,

    async check(_urn: string, _olds: any, news: any) {
        const failures = kindOf(_urn).check(unwrapSecrets(news));
        return { inputs: news, failures };
    },

    async diff(_id: string, urn: string, olds: any, news: any) {
        const kind = kindOf(urn);
        const changed = new Set<string>();
        for (const k of new Set([...Object.keys(olds ?? {}), ...Object.keys(news ?? {})])) {
            if (k === "connection") {
                if (!isDeepStrictEqual(hostIdentity(olds), hostIdentity(news))) changed.add(k);
            } else if (!isDeepStrictEqual(unwrapSecrets(olds?.[k]), unwrapSecrets(news?.[k]))) {
                // outputs recorded in state (sha256, stdout, ...) are not inputs
                if (k in (news ?? {}) || !["sha256", "stdout", "observedSha256", "observedMeta"].includes(k)) changed.add(k);
            }
        }
        const replaces = kind.replaceOn.filter((k) => changed.has(k));
        return { changes: changed.size > 0, replaces, deleteBeforeReplace: false };
    },

    async create(urn: string, inputs: any) {
        const outs = await kindOf(urn).create(withCurrentPins(urn, unwrapSecrets(inputs)));
        return { id: crypto.randomUUID(), outs: { ...inputs, ...publicOutputs(inputs, outs) } };
    },

    async update(_id: string, urn: string, olds: any, news: any) {
        const outs = await kindOf(urn).update(withCurrentPins(urn, unwrapSecrets(olds)), withCurrentPins(urn, unwrapSecrets(news)));
        return { outs: { ...news, ...publicOutputs(news, outs) } };
    },

    async delete(_id: string, urn: string, props: any) {
        await kindOf(urn).delete(withCurrentPins(urn, unwrapSecrets(props)));
    },

    async read(id: string, urn: string, props: any) {
        const kind = kindOf(urn);
        const observed = kind.read ? await kind.read(withCurrentPins(urn, unwrapSecrets(props))) : undefined;
        return { id, props: { ...props, ...(observed ?? {}) } };
    },
};

process.on("exit", closeAllSessions);
provider.main(mailinfraProvider, process.argv.slice(2));
