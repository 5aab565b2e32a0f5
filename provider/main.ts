// The mailinfra resource provider plugin, served to the Pulumi engine over gRPC.
// Started by the engine through ./pulumi-resource-mailinfra (see Pulumi.yaml `plugins`).
import * as crypto from "crypto";
import * as provider from "@pulumi/pulumi/provider";
import { exitWhenOrphaned } from "./orphan";
import * as path from "path";
import * as fs from "fs";
import { readStackFile, stackFilePath } from "../lib/stackFile";
import { closeAllSessions } from "./ssh";
import { changedKeys, installIdOf, inputsOf, readResource } from "./read";
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
        // a project without this stack's file (a throw-away project using this provider) has no current pins
        const repo = path.resolve(__dirname, "..");
        const cfg = fs.existsSync(stackFilePath(repo, stack)) ? readStackFile(repo, stack) : undefined;
        pins = new Map(Object.entries(cfg?.hosts ?? {}).map(([name, h]) => [h.address, { name, hostKeys: h.sshHostKeys ?? [] }]));
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
        const changed = changedKeys(olds, news);
        const replaces = kind.replaceOn.filter((k) => changed.has(k));
        return { changes: changed.size > 0, replaces, deleteBeforeReplace: false };
    },

    async create(urn: string, inputs: any) {
        const plain = withCurrentPins(urn, unwrapSecrets(inputs));
        const [outs, installId] = await Promise.all([kindOf(urn).create(plain, urn), installIdOf(plain.connection)]);
        return { id: crypto.randomUUID(), outs: { ...inputs, ...publicOutputs(inputs, outs), ...(installId ? { installId } : {}) } };
    },

    async update(_id: string, urn: string, olds: any, news: any) {
        const plain = withCurrentPins(urn, unwrapSecrets(news));
        const [outs, installId] = await Promise.all([kindOf(urn).update(withCurrentPins(urn, unwrapSecrets(olds)), plain, urn), installIdOf(plain.connection)]);
        return { outs: { ...news, ...publicOutputs(news, outs), ...(installId ? { installId } : {}) } };
    },

    async delete(_id: string, urn: string, props: any) {
        await kindOf(urn).delete(withCurrentPins(urn, unwrapSecrets(props)), urn);
    },

    // The observed state in the properties diff() compares: `up --refresh` repairs what drifted, and a
    // resource whose host was re-imaged (or a deleted file) is reported gone, so `up` creates it again.
    async read(id: string, urn: string, props: any) {
        kindOf(urn);
        const outcome = await readResource(typeOf(urn), props, withCurrentPins(urn, unwrapSecrets(props)).connection);
        if (outcome.gone) return { id: "", props: {} };
        return { id, props: outcome.props, inputs: inputsOf(outcome.props) };
    },
};

process.on("exit", closeAllSessions);
provider.main(exitWhenOrphaned(mailinfraProvider), process.argv.slice(2));
