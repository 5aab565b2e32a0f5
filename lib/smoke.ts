// End-to-end mail check with real protocol clients: SMTP into the relay, IMAPS on the store.
import * as crypto from "crypto";
import { ImapFlow } from "imapflow";
import * as nodemailer from "nodemailer";

export interface SmokeTarget {
    relayAddress: string;
    storeAddress: string;
    account: string;
    password: string;
    /** Envelope sender of the probe. */
    from?: string;
    timeoutMs?: number;
}

export interface SmokeResult {
    ok: boolean;
    token: string;
    smtpResponse?: string;
    foundAfterMs?: number;
    received?: string[];
    error?: string;
}

export async function sendProbe(opts: { host: string; port?: number; from: string; to: string; subject: string; text: string; headers?: Record<string, string> }): Promise<string> {
    const transport = nodemailer.createTransport({
        host: opts.host,
        port: opts.port ?? 25,
        secure: opts.port === 465,
        tls: { rejectUnauthorized: false },
        name: "smoke.mailinfra.invalid",
        connectionTimeout: 15000,
    });
    try {
        const info = await transport.sendMail({ from: opts.from, to: opts.to, subject: opts.subject, text: opts.text, headers: opts.headers });
        return info.response;
    } finally {
        transport.close();
    }
}

export function imapClient(host: string, user: string, pass: string): ImapFlow {
    return new ImapFlow({ host, port: 993, secure: true, auth: { user, pass }, logger: false, tls: { rejectUnauthorized: false } });
}

/** Waits until a message whose Subject contains `token` is in INBOX; returns its raw headers. */
export async function waitForMessage(host: string, user: string, pass: string, token: string, timeoutMs = 60000): Promise<{ afterMs: number; headers: string } | undefined> {
    const start = Date.now();
    while (Date.now() - start < timeoutMs) {
        const client = imapClient(host, user, pass);
        await client.connect();
        try {
            const lock = await client.getMailboxLock("INBOX");
            try {
                const uids = await client.search({ subject: token }, { uid: true });
                if (uids && uids.length > 0) {
                    const msg = await client.fetchOne(String(uids[uids.length - 1]), { headers: true }, { uid: true });
                    return { afterMs: Date.now() - start, headers: msg ? msg.headers?.toString("utf8") ?? "" : "" };
                }
            } finally {
                lock.release();
            }
        } finally {
            await client.logout().catch(() => undefined);
        }
        await new Promise((r) => setTimeout(r, 1000));
    }
    return undefined;
}

/** Sends one uniquely tagged message through the relay and reads it back over IMAPS. */
export async function smokeTest(t: SmokeTarget): Promise<SmokeResult> {
    const token = `mailinfra-smoke-${crypto.randomUUID()}`;
    try {
        const smtpResponse = await sendProbe({
            host: t.relayAddress,
            from: t.from ?? "smoke-probe@example.net",
            to: t.account,
            subject: `${token}`,
            text: `Smoke test message ${token}\n`,
        });
        const found = await waitForMessage(t.storeAddress, t.account, t.password, token, t.timeoutMs ?? 60000);
        if (!found) return { ok: false, token, smtpResponse, error: `message ${token} accepted by the relay (${smtpResponse}) but not in ${t.account}'s INBOX on ${t.storeAddress} within ${(t.timeoutMs ?? 60000) / 1000} s` };
        const received = found.headers.split(/\r?\n(?=\S)/).filter((h) => /^received:/i.test(h));
        return { ok: true, token, smtpResponse, foundAfterMs: found.afterMs, received };
    } catch (e) {
        return { ok: false, token, error: (e as Error).message };
    }
}
