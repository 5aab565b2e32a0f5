// Reads the plain (non-secret) values of a committed stack file, as Pulumi would pass them.
import * as fs from "fs";
import * as path from "path";
import * as yaml from "js-yaml";
import { ConfigError, parseStackConfig } from "../../lib/config";

export function stackConfig(stack: string): Record<string, unknown> {
    const doc = yaml.load(fs.readFileSync(path.join(__dirname, "..", "..", `Pulumi.${stack}.yaml`), "utf8")) as { config: Record<string, unknown> };
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(doc.config)) {
        if (!k.startsWith("mailinfra:")) continue;
        if (v && typeof v === "object" && "secure" in (v as object)) continue;
        out[k.slice("mailinfra:".length)] = v;
    }
    return stack === "lab" ? withExamplePins(out) : out;
}

/** An example ed25519 pin whose base64 spells what it is (never a real key). */
export function examplePin(label: string): string {
    return `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI${`EXAMPLEHostKeyOf${label}`.padEnd(43, "x").slice(0, 43)}`;
}

/** The lab's pins live in a file lab.sh writes ($LAB_RUN/known_hosts); unit tests do not depend on a running lab. */
function withExamplePins(c: Record<string, any>): Record<string, unknown> {
    const { hostKeysFile: _, ...ssh } = c.ssh ?? {};
    const hosts = Object.fromEntries(Object.entries(c.hosts as Record<string, object>).map(([n, h]) => [n, { ...h, sshHostKeys: [examplePin(n)] }]));
    return { ...c, ssh, hosts };
}

/** The lab stack's values with a change applied (a fresh copy each time). */
export function labWith(mutate: (c: any) => void): Record<string, unknown> {
    const c = structuredClone(stackConfig("lab")) as any;
    mutate(c);
    return c;
}

/** The problems parseStackConfig reports for raw values; [] when they are valid. */
export function problemsOf(raw: Record<string, unknown>): string[] {
    try {
        parseStackConfig(raw);
    } catch (e) {
        if (e instanceof ConfigError) return e.problems;
        throw e;
    }
    return [];
}
