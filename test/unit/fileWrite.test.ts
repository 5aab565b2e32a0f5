// Runs the exact script the provider sends over SSH, locally with bash, against a temp dir.
import { execFileSync } from "child_process";
import * as fs from "fs";
import * as os from "os";
import * as path from "path";
import { describe, expect, it } from "vitest";
import { fileWriteScript, FileProps } from "../../provider/resources";

function runWrite(p: Omit<FileProps, "connection">): { code: number; stderr: string } {
    try {
        execFileSync("bash", ["-euo", "pipefail", "-c", fileWriteScript({ ...p, connection: { host: "local" } })], { input: p.content, stdio: ["pipe", "pipe", "pipe"] });
        return { code: 0, stderr: "" };
    } catch (e: any) {
        return { code: e.status, stderr: String(e.stderr) };
    }
}

const me = os.userInfo().username;
const myGroup = execFileSync("id", ["-gn"]).toString().trim();

describe("file write script", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "mailinfra-file-"));
    const target = path.join(dir, "sub", "app.conf");

    it("creates parents and the file with the requested mode", () => {
        expect(runWrite({ path: target, content: "good = 1\n", mode: "0640", owner: me, group: myGroup }).code).toBe(0);
        expect(fs.readFileSync(target, "utf8")).toBe("good = 1\n");
        expect((fs.statSync(target).mode & 0o777).toString(8)).toBe("640");
    });

    it("keeps the live file and reports the checker's output when the check fails", () => {
        const r = runWrite({ path: target, content: "broken\n", mode: "0640", owner: me, group: myGroup, validate: `grep -q '^good' "$NEW" || { echo "line 1: syntax error"; exit 1; }` });
        expect(r.code).toBe(65);
        expect(r.stderr).toContain("line 1: syntax error");
        expect(r.stderr).toContain(`the current ${target} was left in place`);
        expect(fs.readFileSync(target, "utf8")).toBe("good = 1\n");
        expect(fs.readdirSync(path.dirname(target))).toEqual(["app.conf"]); // no staged leftovers
    });

    it("replaces the file when the check passes", () => {
        expect(runWrite({ path: target, content: "good = 2\n", mode: "0600", owner: me, group: myGroup, validate: `grep -q '^good' "$NEW"` }).code).toBe(0);
        expect(fs.readFileSync(target, "utf8")).toBe("good = 2\n");
        expect((fs.statSync(target).mode & 0o777).toString(8)).toBe("600");
    });

    it("never puts the content on a command line", () => {
        const script = fileWriteScript({ path: target, content: "s3cret-key-material", mode: "0600", owner: me, group: myGroup, connection: { host: "x" } });
        expect(script).not.toContain("s3cret");
    });
});
