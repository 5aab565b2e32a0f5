import { describe, expect, it } from "vitest";
import { parseStackConfig } from "../../lib/config";
import { labWith, problemsOf, stackConfig } from "./stackConfig";

describe("stack config validation", () => {
    it("accepts the committed lab and prod stacks", () => {
        expect(problemsOf(stackConfig("lab"))).toEqual([]);
        expect(problemsOf(stackConfig("prod"))).toEqual([]);
    });

    it("fills defaults (ssh port 22)", () => {
        expect(parseStackConfig(stackConfig("prod")).ssh.port).toBe(22);
    });

    it("names a misspelled key", () => {
        expect(problemsOf(labWith((c) => (c.mail.localDomian = ["x.test"])))).toEqual(["mailinfra:mail.localDomian: unknown key"]);
    });

    it("names a bad host address", () => {
        expect(problemsOf(labWith((c) => (c.hosts.sanger.address = "198.51.100.300")))).toEqual([
            'mailinfra:hosts.sanger.address: must match format "ipv4" (got "198.51.100.300")',
        ]);
    });

    it("names an unknown role and lists the valid ones", () => {
        expect(problemsOf(labWith((c) => (c.hosts.lily.role = "mailman")))).toEqual([
            'mailinfra:hosts.lily.role: must be one of relay, imap, lists, otrs, rt (got "mailman")',
        ]);
    });

    it("rejects a domain that is both local and relayed", () => {
        expect(problemsOf(labWith((c) => (c.mail.relayDomains = ["wikimedia.test"])))).toEqual([
            "mailinfra:mail.relayDomains: wikimedia.test is also in mail.localDomains; a domain is either local, relayed or RT",
        ]);
    });

    it("rejects two hosts with the same role and a missing IMAP store", () => {
        const problems = problemsOf(labWith((c) => (c.hosts.sanger.role = "relay")));
        expect(problems).toContain('mailinfra:hosts: no host has role "imap" (exactly one is required)');
        expect(problems).toContain('mailinfra:hosts: role "relay" is given to mchenry, sanger; one host per role');
    });

    it("rejects duplicate addresses", () => {
        expect(problemsOf(labWith((c) => (c.hosts.lily.address = "198.51.100.11")))).toEqual([
            "mailinfra:hosts.lily.address: 198.51.100.11 is already the address of host mchenry",
        ]);
    });

    it("rejects a hostile alias target", () => {
        const problems = problemsOf(labWith((c) => (c.mail.aliases["wikimedia.test"].evil = ["$(reboot)"])));
        expect(problems).toHaveLength(1);
        expect(problems[0]).toMatch(/^mailinfra:mail.aliases.wikimedia.test.evil\[0\]: must match pattern .* \(got "\$\(reboot\)"\)$/);
    });

    it("rejects aliases for a domain that is not local", () => {
        expect(problemsOf(labWith((c) => (c.mail.aliases["elsewhere.test"] = { a: ["b"] })))).toEqual([
            "mailinfra:mail.aliases.elsewhere.test: not a local domain (add it to mail.localDomains)",
        ]);
    });

    it("reports every problem at once", () => {
        const problems = problemsOf(
            labWith((c) => {
                c.hosts.otrs.role = "ticket";
                c.ssh.port = 0;
                delete c.mail.postmaster;
            }),
        );
        expect(problems).toHaveLength(3);
        expect(problems.join("\n")).toMatch(/mailinfra:ssh.port/);
        expect(problems.join("\n")).toMatch(/mailinfra:mail.postmaster: missing required key/);
    });
});
