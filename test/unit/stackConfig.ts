// Reads the plain (non-secret) values of a committed stack file, as Pulumi would pass them.
import * as fs from "fs";
import * as path from "path";
import * as yaml from "js-yaml";

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
