// Pinned SSH host identities: parsing and fingerprints of host public keys, known_hosts files, and the check
// every SSH client of the program runs before it sends anything (no trust on first use anywhere).
// Pure apart from node's crypto: the provider, the operator commands and the planners share it.
import * as crypto from "crypto";

/** Host key types we pin, with the ssh2 server-host-key algorithms that present each. */
export const HOST_KEY_ALGORITHMS: Record<string, string[]> = {
    "ssh-ed25519": ["ssh-ed25519"],
    "ecdsa-sha2-nistp256": ["ecdsa-sha2-nistp256"],
    "ecdsa-sha2-nistp384": ["ecdsa-sha2-nistp384"],
    "ecdsa-sha2-nistp521": ["ecdsa-sha2-nistp521"],
    "ssh-rsa": ["rsa-sha2-512", "rsa-sha2-256"],
};

/** One pin as written in config: "<type> <base64>" (a comment after it is allowed and ignored). */
export const HOST_KEY_PATTERN = `^(${Object.keys(HOST_KEY_ALGORITHMS).join("|")}) [A-Za-z0-9+/]+={0,2}( [^\\n]*)?$`;

export interface HostKey {
    type: string;
    blob: Buffer;
}

/** Parses "<type> <base64> [comment]"; throws with what is wrong (the blob must name the same type). */
export function parseHostKey(text: string): HostKey {
    const [type, b64] = text.trim().split(/\s+/);
    if (!HOST_KEY_ALGORITHMS[type]) throw new Error(`unsupported key type ${JSON.stringify(type)} (one of ${Object.keys(HOST_KEY_ALGORITHMS).join(", ")})`);
    const blob = Buffer.from(b64 ?? "", "base64");
    const len = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
    const inner = len > 0 && blob.length >= 4 + len ? blob.subarray(4, 4 + len).toString("latin1") : "";
    if (inner !== type) throw new Error(`the base64 part is not a ${type} public key${inner ? ` (it holds a ${JSON.stringify(inner)} key)` : ""}`);
    if (type === "ssh-ed25519" && blob.length !== 4 + 11 + 4 + 32) throw new Error("an ssh-ed25519 key is 32 bytes");
    return { type, blob };
}

/** Key type of a raw SSH public key blob (what ssh2 hands the host verifier). */
export function typeOfBlob(blob: Buffer): string {
    const len = blob.length >= 4 ? blob.readUInt32BE(0) : 0;
    return blob.subarray(4, 4 + len).toString("latin1");
}

/** OpenSSH's fingerprint: SHA256:<unpadded base64 of the key blob's sha256>. */
export function fingerprint(blob: Buffer): string {
    return `SHA256:${crypto.createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

/** "SHA256:… (ssh-ed25519)", for people. */
export function describeHostKey(key: string | HostKey): string {
    const k = typeof key === "string" ? parseHostKey(key) : key;
    return `${fingerprint(k.blob)} (${k.type})`;
}

/** The canonical pin text: type and base64, no comment. */
export function pinText(k: HostKey): string {
    return `${k.type} ${k.blob.toString("base64")}`;
}

export interface KnownHostsEntry {
    /** Names and addresses the keys belong to. */
    names: string[];
    keys: string[];
}

/** Plain known_hosts lines ("name,addr type base64"); hashed names and @cert-authority/@revoked lines are skipped. */
export function parseKnownHosts(text: string): KnownHostsEntry[] {
    const out: KnownHostsEntry[] = [];
    for (const raw of text.split("\n")) {
        const line = raw.trim();
        if (!line || line.startsWith("#") || line.startsWith("@") || line.startsWith("|")) continue;
        const [names, type, b64] = line.split(/\s+/);
        if (!type || !b64) continue;
        out.push({ names: names.split(",").map((n) => n.replace(/^\[([^\]]+)\](:\d+)?$/, "$1")), keys: [`${type} ${b64}`] });
    }
    return out;
}

/** known_hosts text, one line per key, for `StrictHostKeyChecking=yes`. */
export function renderKnownHosts(entries: KnownHostsEntry[]): string {
    return entries.flatMap((e) => e.keys.map((k) => `${e.names.join(",")} ${pinText(parseHostKey(k))}\n`)).join("");
}

/** A known_hosts text with the lines of one address replaced by its new keys, written under `names`. */
export function replaceInKnownHosts(text: string, address: string, names: string[], keys: string[]): string {
    const kept = text.split("\n").filter((line) => {
        const first = line.trim().split(/\s+/)[0] ?? "";
        return !line.trim() || line.startsWith("#") || !first.split(",").includes(address);
    });
    const body = kept.join("\n").replace(/\n*$/, "");
    return (body ? `${body}\n` : "") + renderKnownHosts([{ names, keys }]);
}

export interface PinnedHost {
    /** Host name in stack config (for messages and the re-pin command). */
    name?: string;
    address: string;
    stack?: string;
    hostKeys: string[];
}

/** How to re-pin, for error messages. */
export function pinCommand(stack: string | undefined, names: string[]): string {
    return `npm run pin-host -- --stack ${stack ?? "<stack>"} ${names.join(" ")}`;
}

/**
 * The check an SSH client runs during key exchange, before authentication: the presented host key must be one
 * of the pins, and only the pinned key types are offered. `explain` turns the client's generic error into one
 * naming the host, both fingerprints and how to re-pin.
 */
export function hostKeyCheck(h: PinnedHost) {
    const label = h.name ? `${h.name} (${h.address})` : h.address;
    const keyName = h.name ? `mailinfra:hosts.${h.name}.sshHostKeys` : "the host's pins";
    const pins = h.hostKeys.map(parseHostKey);
    if (pins.length === 0)
        throw new Error(`no pinned SSH host key for ${label}: refusing to connect. Compare its fingerprint out of band, then run ${pinCommand(h.stack, [h.name ?? h.address])}`);
    let refused: string | undefined;
    return {
        // in our order of preference (ed25519 first), whatever order the pins are in
        algorithms: Object.keys(HOST_KEY_ALGORITHMS).filter((t) => pins.some((p) => p.type === t)).flatMap((t) => HOST_KEY_ALGORITHMS[t]),
        verify(presented: Buffer): boolean {
            if (pins.some((p) => p.blob.equals(presented))) return true;
            refused = [
                `SSH host key of ${label} does not match its pin: refused before authentication, nothing was sent.`,
                `  expected (${keyName}): ${pins.map((p) => describeHostKey(p)).join(", ")}`,
                `  presented: ${fingerprint(presented)} (${typeOfBlob(presented)})`,
                `If the host was rebuilt or its key rotated, compare the presented fingerprint with the host's console`,
                `(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub), then re-pin with ${pinCommand(h.stack, [h.name ?? h.address])} and run pulumi up.`,
                `Otherwise something between here and the host is answering in its place.`,
            ].join("\n");
            return false;
        },
        /** The mismatch message when the check refused the key, else the original error. */
        explain(err: Error): Error {
            return refused ? new Error(refused) : err;
        },
    };
}
