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
    return out;
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
