// Protocol probes from outside the fleet with real clients (node:net / node:tls): TLS handshakes per
// version, certificate expiry, and SMTP/IMAP dialogues for the security probes (open relay, AUTH before
// TLS, plaintext IMAP login, hostile local parts). They observe; lib/status.ts judges.
import * as net from "net";
import * as tls from "tls";
import { HOSTILE_LOCAL_PARTS, isRefusal, ProbeResult, TlsMode } from "./status";

const TIMEOUT_MS = 10_000;

/** A line-oriented conversation over a socket that can be upgraded to TLS (STARTTLS). */
class Conversation {
    private buf = "";
    private waiters: (() => void)[] = [];
    private closed = false;
    constructor(public socket: net.Socket) {
        this.attach(socket);
    }
    private attach(s: net.Socket) {
        s.setEncoding("utf8");
        s.on("data", (d: string) => {
            this.buf += d;
            this.waiters.splice(0).forEach((w) => w());
        });
        s.on("close", () => {
            this.closed = true;
            this.waiters.splice(0).forEach((w) => w());
        });
        s.on("error", () => undefined);
    }
    /** Next complete SMTP reply (multi-line aware): [code, text]. */
    async smtpReply(): Promise<[number, string]> {
        const deadline = Date.now() + TIMEOUT_MS;
        for (;;) {
            const m = this.buf.match(/^((?:\d{3}-[^\n]*\n)*)(\d{3})(?: [^\n]*)?\r?\n/);
            if (m) {
                const text = m[0];
                this.buf = this.buf.slice(text.length);
                return [Number(m[2]), text.trim()];
            }
            if (this.closed) return [0, `connection closed${this.buf ? `: ${this.buf.trim()}` : ""}`];
            if (Date.now() > deadline) return [0, "timeout"];
            await new Promise<void>((r) => {
                this.waiters.push(r);
                setTimeout(r, 500);
            });
        }
    }
    /** Next IMAP line starting with `prefix`. */
    async imapLine(prefix: string): Promise<string> {
        const deadline = Date.now() + TIMEOUT_MS;
        for (;;) {
            const lines = this.buf.split("\r\n");
            const i = lines.findIndex((l, k) => k < lines.length - 1 && l.startsWith(prefix));
            if (i >= 0) {
                const line = lines[i];
                this.buf = lines.slice(i + 1).join("\r\n");
                return line;
            }
            if (this.closed) return "connection closed";
            if (Date.now() > deadline) return "timeout";
            await new Promise<void>((r) => {
                this.waiters.push(r);
                setTimeout(r, 500);
            });
        }
    }
    send(line: string) {
        this.socket.write(`${line}\r\n`);
    }
    async command(line: string): Promise<[number, string]> {
        this.send(line);
        return this.smtpReply();
    }
    async startTls(host: string, opts: tls.ConnectionOptions = {}): Promise<tls.TLSSocket> {
        this.socket.removeAllListeners("data");
        const t = await tlsConnect({ socket: this.socket, ...(net.isIP(host) ? {} : { servername: host }), ...opts });
        this.socket = t;
        this.buf = "";
        this.attach(t);
        return t;
    }
    end() {
        this.socket.destroy();
    }
}

/** Exim limits concurrent connections per outside address (5 in main-common) and counts a closed one
 *  until its child is reaped: consecutive probes of one host are spaced out. */
const SPACING_MS = 400;
const lastConnect = new Map<string, number>();
async function paced(host: string): Promise<void> {
    const wait = (lastConnect.get(host) ?? 0) + SPACING_MS - Date.now();
    lastConnect.set(host, Date.now() + Math.max(0, wait));
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}

async function connect(host: string, port: number): Promise<net.Socket> {
    await paced(host);
    return new Promise((resolve, reject) => {
        const s = net.connect({ host, port, timeout: TIMEOUT_MS });
        s.once("connect", () => resolve(s));
        s.once("timeout", () => reject(new Error("timeout")));
        s.once("error", reject);
    });
}

/** Handshakes without verification on purpose: they observe (weak versions too) and send nothing secret;
 *  the served certificate is judged afterwards against tls.certificate (status checkServedCertificate). */
async function tlsConnect(opts: tls.ConnectionOptions): Promise<tls.TLSSocket> {
    if (!opts.socket && opts.host) await paced(opts.host);
    return new Promise((resolve, reject) => {
        const t = tls.connect({ rejectUnauthorized: false, timeout: TIMEOUT_MS, ...opts });
        t.once("secureConnect", () => resolve(t));
        t.once("timeout", () => {
            t.destroy();
            reject(new Error("timeout"));
        });
        t.once("error", reject);
    });
}

/** Is a TCP port reachable from here? */
export async function portOpen(host: string, port: number): Promise<boolean> {
    try {
        (await connect(host, port)).destroy();
        return true;
    } catch {
        return false;
    }
}

export interface TlsObservation {
    /** Protocol versions that completed a handshake. */
    accepted: string[];
    notAfter?: Date;
    subject?: string;
    /** SHA-256 of the served leaf certificate (status compares it with tls.certificate). */
    fingerprint256?: string;
    error?: string;
}

const VERSIONS: tls.SecureVersion[] = ["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"];

/** One handshake per TLS version (the client offers only that version, at OpenSSL security level 0 so
 *  1.0/1.1 are really offered); STARTTLS ports get the SMTP dialogue first. */
export async function observeTls(host: string, port: number, mode: TlsMode): Promise<TlsObservation> {
    const out: TlsObservation = { accepted: [] };
    for (const v of VERSIONS) {
        // a refusal of 1.2/1.3 may be the server's connection limit: one more try after a pause
        for (let attempt = 0; attempt < (v === "TLSv1.2" || v === "TLSv1.3" ? 2 : 1); attempt++) {
            if (attempt) await new Promise((r) => setTimeout(r, 2000));
            if (await tryVersion(v)) break;
        }
        if (out.error) break;
    }
    return out;

    async function tryVersion(v: tls.SecureVersion): Promise<boolean> {
        const opts: tls.ConnectionOptions = { minVersion: v, maxVersion: v, ciphers: "DEFAULT:@SECLEVEL=0", ...(net.isIP(host) ? {} : { servername: host }) };
        let sock: tls.TLSSocket | undefined;
        let raw: net.Socket | undefined;
        try {
            if (mode === "implicit") sock = await tlsConnect({ host, port, ...opts });
            else {
                raw = await connect(host, port);
                const c = new Conversation(raw);
                await c.smtpReply();
                await c.command("EHLO probe.mailinfra.invalid");
                const [code, text] = await c.command("STARTTLS");
                if (code !== 220) {
                    c.end();
                    return false;
                }
                sock = await c.startTls(host, opts);
            }
            out.accepted.push(sock.getProtocol() ?? v);
            const cert = sock.getPeerCertificate();
            if (cert?.valid_to) {
                out.notAfter = new Date(cert.valid_to);
                out.subject = String(cert.subject?.CN ?? "");
                out.fingerprint256 = cert.fingerprint256;
            }
            return true;
        } catch (e) {
            const msg = (e as Error).message;
            if (/ECONNREFUSED|EHOSTUNREACH|timeout/.test(msg)) out.error = msg;
            return false;
        } finally {
            sock?.end();
            sock?.destroy();
            raw?.destroy();
        }
    }
}

/** One SMTP session from outside: EHLO, then MAIL/RCPT; the answer to RCPT (or to what failed first). */
/** An SMTP session past the greeting; a 421 (connection limit) is retried after a pause. */
async function smtpOpen(host: string, port: number): Promise<{ c?: Conversation; reply: [number, string] }> {
    for (let attempt = 0; ; attempt++) {
        let c: Conversation;
        try {
            c = new Conversation(await connect(host, port));
        } catch (e) {
            return { reply: [0, `no SMTP on ${host}:${port} (${(e as Error).message})`] };
        }
        const reply = await c.smtpReply();
        if (reply[0] === 220) return { c, reply };
        c.end();
        if (reply[0] !== 421 || attempt >= 3) return { reply };
        await new Promise((r) => setTimeout(r, 2000));
    }
}

async function smtpRcpt(host: string, from: string, to: string): Promise<[number, string]> {
    const { c, reply } = await smtpOpen(host, 25);
    if (!c) return reply;
    try {
        await c.command("EHLO probe.mailinfra.invalid");
        const [mc, mt] = await c.command(`MAIL FROM:<${from}>`);
        if (mc !== 250) return [mc, mt];
        const reply = await c.command(`RCPT TO:<${to}>`);
        c.send("QUIT");
        return reply;
    } finally {
        c.end();
    }
}

export async function probeOpenRelay(host: string, name: string): Promise<ProbeResult> {
    const [code, text] = await smtpRcpt(host, "probe@example.net", "relay-test@example.org");
    return { host: name, probe: "open relay (external -> external)", answer: text.split("\n").pop()!, refused: code === 0 || isRefusal(code) };
}

export async function probeHostileLocalParts(host: string, name: string, domain: string): Promise<ProbeResult[]> {
    const out: ProbeResult[] = [];
    for (const lp of HOSTILE_LOCAL_PARTS) {
        const [code, text] = await smtpRcpt(host, "probe@example.net", `${lp}@${domain}`);
        out.push({ host: name, probe: `hostile local part ${lp}@${domain}`, answer: text.split("\n").pop()!, refused: code === 0 || isRefusal(code) });
    }
    return out;
}

/** AUTH must be neither advertised nor accepted before STARTTLS. */
export async function probeAuthBeforeTls(host: string, name: string, port: number): Promise<ProbeResult> {
    const probe = `AUTH before TLS :${port}`;
    const { c, reply } = await smtpOpen(host, port);
    if (!c) return { host: name, probe, answer: `no session: ${reply[1]}`, refused: reply[0] === 0 && /ECONNREFUSED/.test(reply[1]) };
    try {
        const [, ehlo] = await c.command("EHLO probe.mailinfra.invalid");
        const advertised = /^250[- ]AUTH\b/im.test(ehlo);
        // the credentials are made up: the answer must be "not now", never "wrong password"
        const [code, text] = await c.command(`AUTH PLAIN ${Buffer.from("\0probe\0not-a-password").toString("base64")}`);
        c.send("QUIT");
        const refusedBeforeCheck = code === 503 || code === 538 || code === 504 || code === 500;
        return { host: name, probe, answer: `${advertised ? "AUTH advertised; " : "AUTH not advertised; "}${text}`, refused: !advertised && refusedBeforeCheck };
    } finally {
        c.end();
    }
}

/** Plaintext IMAP: port 143 closed, or LOGINDISABLED and LOGIN refused. */
export async function probePlaintextImap(host: string, name: string): Promise<ProbeResult> {
    const probe = "plaintext IMAP login :143";
    let c: Conversation;
    try {
        c = new Conversation(await connect(host, 143));
    } catch (e) {
        return { host: name, probe, answer: `port 143 closed (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, refused: true };
    }
    try {
        const greeting = await c.imapLine("* ");
        c.send("a1 LOGIN probe not-a-password");
        const answer = await c.imapLine("a1 ");
        return { host: name, probe, answer: `${greeting} / ${answer}`, refused: /LOGINDISABLED/i.test(greeting) || /^a1 (NO|BAD)/.test(answer) && !/AUTHENTICATIONFAILED/i.test(answer) };
    } finally {
        c.end();
    }
}
