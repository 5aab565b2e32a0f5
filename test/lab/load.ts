// Mail load for the fault tests and the benchmark: Postfix's smtp-source (Debian's postfix package, unpacked
// with dpkg -x on the lab's "internet" host ext, where Exim is the fixture MTA and postfix cannot be installed)
// sends a batch; the store's Maildir is read back to count every message and time its delivery.
//
// Every message of a batch is addressed to <seq><tag>@wikiquote.test (smtp-source -N numbers the recipients;
// the lab's wikiquote.test catch-all leads to the smoke account), so the relay's Received header
// "for <seq><tag>@wikiquote.test" names each message uniquely; the Subject carries the batch tag.
import { spawn } from "child_process";
import * as crypto from "crypto";
import * as path from "path";
import { LAB_CACHE, must, ssh } from "./harness";

export const EXT = "198.51.100.20";
export const RELAY = "198.51.100.11";
export const STORE = "198.51.100.12";
export const LISTS = "198.51.100.13";
/** Where the batches land: the smoke account (wikiquote.test's catch-all → noc → smoke). */
export const LOAD_MAILDIR = "/var/vmail/wikimedia.test/smoke";
export const LOAD_DOMAIN = "wikiquote.test";
export const LOAD_SESSIONS = 4;
/** The Maildir folders a batch can land in: the default user filter files mail the relay marked with five "+"
 *  into .Junk, and smtp-source's messages score near 5 (LOCALPART_IN_SUBJECT, UPPERCASE_75_100, ...; a random tag
 *  can add TVD_SUBJ_NUM_OBFU_MINFP and reach 5.2). Delivered to the store is delivered, whichever folder. */
const LOAD_FOLDERS = "new cur .Junk/new .Junk/cur";

const PREFIX = "/opt/mailinfra-load";
const SMTP_SOURCE = `LD_LIBRARY_PATH=${PREFIX}/usr/lib/postfix ${PREFIX}/usr/sbin/smtp-source`;

/** smtp-source on ext, from Debian's postfix .deb (unpacked, not installed: it would replace ext's Exim). */
export function ensureLoadGenerator(): void {
    must(
        ssh(EXT, `set -e; [ -x ${PREFIX}/usr/sbin/smtp-source ] && exit 0; d=$(mktemp -d); cd "$d"; apt-get download -q postfix >/dev/null; mkdir -p ${PREFIX}; dpkg -x postfix_*.deb ${PREFIX}; rm -rf "$d"; ${SMTP_SOURCE} 2>&1 | grep -q usage || true`),
        "installing smtp-source on ext",
    );
}

export interface BatchSpec {
    /** SMTP server the internet host sends to (relay, or the secondary MX). */
    server: string;
    count: number;
    /** Parallel SMTP sessions, each kept open for all its messages (-d): the relay allows 5 per outside host, and
     *  reconnecting after every message met "421 Too many concurrent SMTP connections" (closed sessions still count
     *  until Exim reaps them). */
    sessions?: number;
    /** Body size in bytes (smtp-source -l). */
    bodyBytes?: number;
}

export interface Batch extends BatchSpec {
    tag: string;
    /** ext clock (the lab containers share the machine's clock), seconds since the epoch. */
    startedAt: number;
    endedAt: number;
    exitCode: number;
    output: string;
}

export const newTag = () => `ld${crypto.randomBytes(5).toString("hex")}`;

/** Sends one batch with smtp-source from ext; resolves when smtp-source exits (exit 0 = every message accepted with 250). */
export function sendBatch(spec: BatchSpec, tag = newTag()): Promise<Batch> {
    const cmd = [
        `echo start $(date +%s.%N)`,
        `${SMTP_SOURCE} -N -d -s ${spec.sessions ?? LOAD_SESSIONS} -m ${spec.count} -l ${spec.bodyBytes ?? 1024} -f load@example.net -t ${tag}@${LOAD_DOMAIN} -S ${tag} -M ext.lab.test ${spec.server}:25 2>&1; rc=$?`,
        `echo end $(date +%s.%N) $rc`,
    ].join("; ");
    return new Promise((resolve, reject) => {
        const child = spawn("ssh", ["-F", path.join(LAB_CACHE, "ssh_config"), EXT, cmd], { stdio: ["ignore", "pipe", "pipe"] });
        let out = "";
        child.stdout.on("data", (d) => (out += d));
        child.stderr.on("data", (d) => (out += d));
        child.on("error", reject);
        child.on("close", () => {
            const start = /^start (\S+)/m.exec(out);
            const end = /^end (\S+) (\d+)/m.exec(out);
            if (!start || !end) return reject(new Error(`smtp-source on ext gave no timing:\n${out.slice(-2000)}`));
            resolve({ ...spec, tag, startedAt: +start[1], endedAt: +end[1], exitCode: +end[2], output: out });
        });
    });
}

export interface Delivered {
    seq: number;
    /** Date: header written by smtp-source, seconds since the epoch. smtp-source formats it ONCE when it starts
     *  (checked with `-w 1`: four messages one second apart all carry the same Date), so it is the batch's start. */
    sentAt: number;
    /** When the relay began receiving the message (its Exim message id in the relay's Received header: base-62
     *  seconds + 1/2000 s), seconds since the epoch; NaN when the header is missing. */
    relayReceivedAt: number;
    /** The Maildir file's modification time on the store (the moment Exim wrote it), seconds since the epoch. */
    deliveredAt: number;
    file: string;
}

/** Every copy of the batch's messages in the store's Maildir. */
export function collectDelivered(tag: string, store = STORE, maildir = LOAD_MAILDIR): Delivered[] {
    const r = must(
        ssh(store, `cd ${maildir} 2>/dev/null || exit 0; find ${LOAD_FOLDERS} -type f -printf 'T %T@ %p\\n' 2>/dev/null; grep -s -l -r -F 'Subject: ${tag}' ${LOAD_FOLDERS} | xargs -r grep -H -m6 -o -E '^Date: .*|for <?[0-9]+${tag}@|^[[:space:]]+id [0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}'`),
        "reading the store's Maildir",
    );
    const mtime = new Map<string, number>();
    const seq = new Map<string, number>();
    const date = new Map<string, number>();
    // the last Exim id before the "for <seq><tag>@" line is the relay's (the store's own Received comes first)
    const lastId = new Map<string, string>();
    const relayId = new Map<string, string>();
    for (const line of r.out.split("\n")) {
        let m: RegExpExecArray | null;
        if ((m = /^T (\S+) (.+)$/.exec(line))) mtime.set(m[2], +m[1]);
        else if ((m = new RegExp(`^([^:]+):for <?(\\d+)${tag}@`).exec(line))) {
            if (!seq.has(m[1])) {
                seq.set(m[1], +m[2]);
                if (lastId.has(m[1])) relayId.set(m[1], lastId.get(m[1])!);
            }
        } else if ((m = /^([^:]+):\s+id (\S+)$/.exec(line))) lastId.set(m[1], m[2]);
        else if ((m = /^([^:]+):Date: (.*)$/.exec(line))) { if (!date.has(m[1])) date.set(m[1], Date.parse(m[2].replace(/\s*\(.*\)$/, "")) / 1000); }
    }
    return [...seq].map(([file, s]) => ({ seq: s, file, sentAt: date.get(file) ?? NaN, relayReceivedAt: eximIdTime(relayId.get(file)), deliveredAt: mtime.get(file) ?? NaN }));
}

const BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/** Exim 4.96 message id "tttttt-pppppp-ff": base-62 seconds, pid, and (no localhost_number) the time's fraction
 *  in 500 µs units; the id is taken when the message's data starts to arrive. */
export function eximIdTime(id: string | undefined): number {
    const m = id ? /^([0-9A-Za-z]{6})-[0-9A-Za-z]{6}-([0-9A-Za-z]{2})$/.exec(id) : null;
    if (!m) return NaN;
    const dec = (x: string) => [...x].reduce((a, c) => a * 62 + BASE62.indexOf(c), 0);
    return dec(m[1]) + (dec(m[2]) * 500) / 1e6;
}

export interface Tally {
    expected: number;
    /** distinct messages found */
    delivered: number;
    /** sequence numbers never delivered */
    lost: number[];
    /** extra copies beyond the first (SMTP is at-least-once) */
    duplicates: number;
}

export function tally(batch: Batch, found: Delivered[]): Tally {
    const copies = new Map<number, number>();
    for (const d of found) copies.set(d.seq, (copies.get(d.seq) ?? 0) + 1);
    const lost: number[] = [];
    for (let i = 1; i <= batch.count; i++) if (!copies.has(i)) lost.push(i);
    return { expected: batch.count, delivered: copies.size, lost, duplicates: found.length - copies.size };
}

/** Number of the batch's messages in the store's Maildir right now (cheap poll). */
export function deliveredCount(tag: string, store = STORE, maildir = LOAD_MAILDIR): number {
    const r = ssh(store, `cd ${maildir} 2>/dev/null && grep -s -l -r -F 'Subject: ${tag}' ${LOAD_FOLDERS} | wc -l`);
    return r.code === 0 ? parseInt(r.out.trim(), 10) || 0 : 0;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls until every message of the batch is in the Maildir (or the timeout); returns the tally and the copies. */
export async function waitForBatch(batch: Batch, timeoutMs: number, store = STORE): Promise<{ tally: Tally; found: Delivered[] }> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end && deliveredCount(batch.tag, store) < batch.count) await sleep(1000);
    const found = collectDelivered(batch.tag, store);
    return { tally: tally(batch, found), found };
}

/** Removes the batch's messages from the store (the smoke account stays small). */
export function removeBatch(tag: string, store = STORE, maildir = LOAD_MAILDIR): void {
    // maildirsize is recounted by Exim when missing: the quota does not keep counting removed messages
    ssh(store, `cd ${maildir} 2>/dev/null && grep -s -l -r -F 'Subject: ${tag}' ${LOAD_FOLDERS} | xargs -r rm -f; rm -f maildirsize .Junk/maildirsize`);
}

const percentile = (xs: number[], p: number) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : NaN;
};

export interface PipelineFigures {
    messages: number;
    bodyBytes: number;
    /** delivered messages / (last delivery − first send) */
    messagesPerSecond: number;
    /** the sender's rate: accepted messages / smtp-source wall time */
    acceptedPerSecond: number;
    /** per message: relay starts receiving its data (Exim id) -> file in the store's Maildir (mtime) */
    latencyP50_s: number;
    latencyP99_s: number;
    /** per message: batch start (smtp-source's Date header + 0.5 s) -> Maildir; what docs/faults.md (20:53 UTC)
     *  reported as "latency" before the Date header was found to be the batch's start */
    sinceBatchStartP50_s: number;
    sinceBatchStartP99_s: number;
}

/** Throughput and latency of one batch (first copy of each message). */
export function pipelineFigures(batch: Batch, found: Delivered[]): PipelineFigures {
    const first = new Map<number, Delivered>();
    for (const d of found) if (!first.has(d.seq) || first.get(d.seq)!.deliveredAt > d.deliveredAt) first.set(d.seq, d);
    const ds = [...first.values()];
    const lastDelivery = Math.max(...ds.map((d) => d.deliveredAt));
    // the Date header (the batch start) is truncated to the second: add half a second so the median is unbiased
    const sinceStart = ds.map((d) => d.deliveredAt - (d.sentAt + 0.5));
    const latencies = ds.map((d) => d.deliveredAt - d.relayReceivedAt).filter((x) => !Number.isNaN(x));
    return {
        messages: ds.length,
        bodyBytes: batch.bodyBytes ?? 1024,
        messagesPerSecond: +(ds.length / (lastDelivery - batch.startedAt)).toFixed(2),
        acceptedPerSecond: +(batch.count / (batch.endedAt - batch.startedAt)).toFixed(2),
        latencyP50_s: +percentile(latencies, 50).toFixed(2),
        latencyP99_s: +percentile(latencies, 99).toFixed(2),
        sinceBatchStartP50_s: +percentile(sinceStart, 50).toFixed(2),
        sinceBatchStartP99_s: +percentile(sinceStart, 99).toFixed(2),
    };
}

/** Exim queue size on a host (exim -bpc). */
export function queueSize(address: string): number {
    const r = ssh(address, "exim4 -bpc");
    return r.code === 0 ? parseInt(r.out.trim(), 10) : NaN;
}
