// Read-only observation of managed items on a host, shared by the provider's read() (`pulumi up --refresh`)
// and the drift audit (`npm run drift`), so both judge the same items the same way. Pure: scripts to run on
// the host and parsers of their output; nothing here opens a connection.
import * as crypto from "crypto";
import { shq as q } from "./shell";


/** Written on the first converge of a host; a host without it (or with another one) was re-imaged. */
export const INSTALL_ID_FILE = "/var/lib/mailinfra/install-id";

/** Prints this host's install id, creating it when absent (only a write step may do this). */
export function ensureInstallIdScript(): string {
    const f = q(INSTALL_ID_FILE);
    return `[ -s ${f} ] || { mkdir -p "$(dirname ${f})"; cat /proc/sys/kernel/random/uuid > ${f}.new && mv -f ${f}.new ${f}; }\ncat ${f}\n`;
}

/** Drifted file contents larger than this are not carried into the state (only reported). */
export const MAX_SHOWN_BYTES = 1 << 20;

/**
 * One line "present<TAB>owner group mode<TAB>sha256" or "missing". With `contentUnlessSha`, a second line
 * with the file's content in base64 when its hash differs (and it is not larger than MAX_SHOWN_BYTES):
 * only for files whose content may be shown (never secret files).
 */
export function fileObserveScript(path: string, contentUnlessSha?: string): string {
    const p = q(path);
    const lines = [`if [ -f ${p} ]; then`, `  h=$(sha256sum < ${p} | cut -d' ' -f1)`, `  printf 'present\\t%s\\t%s\\n' "$(stat -c '%U %G %a' ${p})" "$h"`];
    if (contentUnlessSha)
        lines.push(`  if [ "$h" != ${q(contentUnlessSha)} ] && [ "$(stat -c %s ${p})" -le ${MAX_SHOWN_BYTES} ]; then base64 -w0 < ${p}; echo; fi`);
    lines.push(`else echo missing; fi`);
    return lines.join("\n") + "\n";
}

export type FileObservation = { missing: true } | { missing: false; owner: string; group: string; mode: string; sha256: string; content?: string };

export function parseFileObservation(out: string): FileObservation {
    const [first = "", second] = out.split("\n");
    const [state, meta = "", hash = ""] = first.split("\t");
    if (state !== "present") return { missing: true };
    const [owner = "", group = "", mode = ""] = meta.split(" ");
    const o: FileObservation = { missing: false, owner, group, mode, sha256: hash };
    if (second) o.content = Buffer.from(second.trim(), "base64").toString("utf8");
    return o;
}

export interface DeclaredFile {
    mode: string;
    owner: string;
    group: string;
    sha256: string;
}

/** How an observed file differs from the declared one (empty: in place). */
export function fileDifferences(d: DeclaredFile, o: FileObservation): { missing?: true; content?: true; mode?: string; owner?: string; group?: string } {
    if (o.missing) return { missing: true };
    const out: { content?: true; mode?: string; owner?: string; group?: string } = {};
    if (o.sha256 !== d.sha256) out.content = true;
    if (parseInt(o.mode, 8) !== parseInt(d.mode, 8)) out.mode = o.mode.padStart(4, "0");
    if (o.owner !== d.owner) out.owner = o.owner;
    if (o.group !== d.group) out.group = o.group;
    return out;
}

/** One line per package: "name<TAB>dpkg status abbreviation" ("ii" = installed). */
export function packagesObserveScript(packages: string[]): string {
    const names = packages.map((p) => q(p.replace(/\/.*$/, ""))).join(" ");
    return `for p in ${names}; do printf '%s\\t%s\\n' "$p" "$(dpkg-query -W -f='\${db:Status-Abbrev}' "$p" 2>/dev/null | tr -d ' ' || true)"; done\n`;
}

/** The declared packages that are not installed, with their dpkg state ("" = unknown to dpkg). */
export function packagesNotInstalled(packages: string[], out: string): { name: string; state: string }[] {
    const state = new Map(out.split("\n").filter(Boolean).map((l) => l.split("\t") as [string, string]));
    return packages.filter((p) => state.get(p.replace(/\/.*$/, "")) !== "ii").map((p) => ({ name: p, state: state.get(p.replace(/\/.*$/, "")) ?? "" }));
}

// ---------------------------------------------------------------------------------------------
// Batches: many observations of one host in one remote script (one SSH round trip).
// ---------------------------------------------------------------------------------------------
export interface BatchItem {
    key: string;
    /** Runs in its own subshell with `set -eo pipefail`; its exit code and output are reported. */
    script: string;
}

export interface BatchResult {
    rc: number;
    out: string;
}

/** One script that runs every item and frames its output; `marker` must not occur in any output. */
export function batchScript(items: BatchItem[], marker: string, preamble = ""): string {
    const lines = ["set +e", preamble];
    items.forEach((item, i) => {
        lines.push(`echo '${marker} begin ${i}'`, `(\nset -eo pipefail\n${item.script}\n) 2>&1`, `echo "${marker} end ${i} $?"`);
    });
    return lines.filter(Boolean).join("\n") + "\n";
}

/** The preamble's output (before the first item) and each item's result, by key. */
export function parseBatch(items: BatchItem[], marker: string, stdout: string): { preamble: string; results: Map<string, BatchResult> } {
    const results = new Map<string, BatchResult>();
    const lines = stdout.split("\n");
    const preamble: string[] = [];
    let current: number | undefined;
    let buf: string[] = [];
    for (const line of lines) {
        const begin = line.match(new RegExp(`^${marker} begin (\\d+)$`));
        const end = line.match(new RegExp(`^${marker} end (\\d+) (\\d+)$`));
        if (begin) {
            current = +begin[1];
            buf = [];
        } else if (end && current === +end[1]) {
            results.set(items[current].key, { rc: +end[2], out: buf.join("\n") });
            current = undefined;
        } else if (current !== undefined) buf.push(line);
        else preamble.push(line);
    }
    return { preamble: preamble.join("\n").trim(), results };
}

/** A random marker for framing a batch's output. */
export function batchMarker(): string {
    return `@@mailinfra-${crypto.randomBytes(8).toString("hex")}`;
}
