// The plain (non-secret) values of Pulumi.<stack>.yaml, validated by the one config reader. For commands that
// must not need the stack's passphrase (mailadmin with a key file, pin-host) and for the provider's current pins.
import * as fs from "fs";
import * as path from "path";
import * as yaml from "js-yaml";
import { CONFIG_OBJECTS, parseStackConfig, ParseOptions, StackConfig } from "./config";

export function stackFilePath(repo: string, stack: string): string {
    return path.join(repo, `Pulumi.${stack}.yaml`);
}

/** The stack file's config block as written (secrets stay `{secure: …}`). */
export function rawStackFile(repo: string, stack: string): Record<string, unknown> {
    const file = stackFilePath(repo, stack);
    if (!fs.existsSync(file)) throw new Error(`no stack config ${file}`);
    const doc = (yaml.load(fs.readFileSync(file, "utf8")) as { config?: Record<string, unknown> }) ?? {};
    return doc.config ?? {};
}

export function readStackFile(repo: string, stack: string, opts: ParseOptions = {}): StackConfig {
    const raw = rawStackFile(repo, stack);
    return parseStackConfig(Object.fromEntries(CONFIG_OBJECTS.filter((k) => raw[`mailinfra:${k}`] !== undefined).map((k) => [k, raw[`mailinfra:${k}`]])), { stack, ...opts });
}
