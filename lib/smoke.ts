// End-to-end mail check with real protocol clients: SMTP into the relay, IMAPS on the store.
import * as crypto from "crypto";
import { ImapFlow } from "imapflow";
import * as nodemailer from "nodemailer";
import * as tls from "tls";

/** The configured certificate (tls.certificate) as the only trust anchor: its chain, and the served leaf it must be. */
export interface CertificatePin {
    ca: string[];
    fingerprint256: string;
}

/** Unset for a stack without tls.certificate: every host then serves its own Debian snakeoil pair. */
export function certificatePin(pem: string | undefined): CertificatePin | undefined {
    if (!pem) return undefined;
    const ca = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
    if (!ca.length) throw new Error("mailinfra:tls.certificate holds no PEM certificate");
    return { ca, fingerprint256: new crypto.X509Certificate(ca[0]!).fingerprint256 };
}

/**
 * Client TLS options for anything that sends a password or a message: with a pin, only the configured
 * chain is trusted (partial chain: a CA-issued chain without its root works too) and the served leaf must
 * be the configured one (names are not checked: we connect by address). Without one, the snakeoil
 * certificate cannot be verified: only TLS >= 1.2 is required.
 */
export function pinnedTls(pin: CertificatePin | undefined): tls.ConnectionOptions {
    if (!pin) return { rejectUnauthorized: false, minVersion: "TLSv1.2" };
    return {
        rejectUnauthorized: true,
        minVersion: "TLSv1.2",
        ca: pin.ca,
        allowPartialTrustChain: true,
        checkServerIdentity: (host, cert) =>
            cert.fingerprint256 === pin.fingerprint256 ? undefined : new Error(`${host} served certificate ${cert.fingerprint256} (CN ${cert.subject?.CN ?? "?"}), not the configured tls.certificate ${pin.fingerprint256}`),
    };
}

/** What the smoke test verified about the served certificates, for its report. */
export function certificateCheckNote(pin: CertificatePin | undefined): string {
    return pin
        ? `served certificate is the configured tls.certificate (SHA-256 ${pin.fingerprint256.slice(0, 23)}…) on the relay's STARTTLS and the store's IMAPS`
        : "certificates not verified: no tls.certificate configured (each host serves its own Debian snakeoil); TLS >= 1.2 required";
}

export interface SmokeTarget {
    relayAddress: string;
    storeAddress: string;
    account: string;
    password: string;
    /** Envelope sender of the probe. */
    from?: string;
    timeoutMs?: number;
    /** The stack's tls.certificate: the relay and the store must serve exactly it. */
    certificate?: string;
}

export interface SmokeResult {
    ok: boolean;
    token: string;
    smtpResponse?: string;
    foundAfterMs?: number;
    received?: string[];
    error?: string;
    /** What was checked about the served certificates. */
    certificate?: string;
}

/** One message over SMTP; with `tls` (pinnedTls) STARTTLS is required and the certificate checked before MAIL. */
export async function sendProbe(opts: { host: string; port?: number; from: string; to: string; subject: string; text: string; headers?: Record<string, string>; tls?: tls.ConnectionOptions }): Promise<string> {
    const transport = nodemailer.createTransport({
        host: opts.host,
        port: opts.port ?? 25,
        secure: opts.port === 465,
        requireTLS: opts.tls !== undefined && opts.port !== 465,
        tls: opts.tls ?? { rejectUnauthorized: false },
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

/** IMAPS; the password is sent only after the TLS options accepted the certificate. */
export function imapClient(host: string, user: string, pass: string, tlsOptions: tls.ConnectionOptions = { rejectUnauthorized: false }): ImapFlow {
    return new ImapFlow({ host, port: 993, secure: true, auth: { user, pass }, logger: false, tls: tlsOptions });
}

/** Waits until a message whose Subject contains `token` is in INBOX; returns its raw headers. */
export async function waitForMessage(host: string, user: string, pass: string, token: string, timeoutMs = 60000, tlsOptions?: tls.ConnectionOptions): Promise<{ afterMs: number; headers: string } | undefined> {
    const start = Date.now();
    while (Date.now() - start < timeoutMs) {
        const client = imapClient(host, user, pass, tlsOptions);
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
    let certificate: string | undefined;
    try {
        const pin = certificatePin(t.certificate);
        certificate = certificateCheckNote(pin);
        const tlsOptions = pinnedTls(pin);
        const smtpResponse = await sendProbe({
            tls: tlsOptions,
            host: t.relayAddress,
            from: t.from ?? "smoke-probe@example.net",
            to: t.account,
            subject: `${token}`,
            text: `Smoke test message ${token}\n`,
        });
        const found = await waitForMessage(t.storeAddress, t.account, t.password, token, t.timeoutMs ?? 60000, tlsOptions);
        if (!found) return { ok: false, token, smtpResponse, certificate, error: `message ${token} accepted by the relay (${smtpResponse}) but not in ${t.account}'s INBOX on ${t.storeAddress} within ${(t.timeoutMs ?? 60000) / 1000} s` };
        const received = found.headers.split(/\r?\n(?=\S)/).filter((h) => /^received:/i.test(h));
        return { ok: true, token, smtpResponse, foundAfterMs: found.afterMs, received, certificate };
    } catch (e) {
        return { ok: false, token, certificate, error: (e as Error).message };
    }
}
