// The mailinfra resource provider plugin, served to the Pulumi engine over gRPC.
// Started by the engine through ./pulumi-resource-mailinfra (see Pulumi.yaml `plugins`).
import * as crypto from "crypto";
import * as provider from "@pulumi/pulumi/provider";
import { isDeepStrictEqual } from "util";
import { exitWhenOrphaned } from "./orphan";
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

/** Fields of `connection` that identify the target host; key material may rotate freely. */
function hostIdentity(props: any) {
    const c = unwrapSecrets(props?.connection) ?? {};
    return { host: c.host, port: c.port ?? 22, user: c.user ?? "root" };
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
        const outs = await kindOf(urn).create(unwrapSecrets(inputs), urn);
        return { id: crypto.randomUUID(), outs: { ...inputs, ...publicOutputs(inputs, outs) } };
    },

    async update(_id: string, urn: string, olds: any, news: any) {
        const outs = await kindOf(urn).update(unwrapSecrets(olds), unwrapSecrets(news), urn);
        return { outs: { ...news, ...publicOutputs(news, outs) } };
    },

    async delete(_id: string, urn: string, props: any) {
        await kindOf(urn).delete(unwrapSecrets(props), urn);
    },

    async read(id: string, urn: string, props: any) {
        const kind = kindOf(urn);
        const observed = kind.read ? await kind.read(unwrapSecrets(props)) : undefined;
        return { id, props: { ...props, ...(observed ?? {}) } };
    },
};

process.on("exit", closeAllSessions);
provider.main(exitWhenOrphaned(mailinfraProvider), process.argv.slice(2));
