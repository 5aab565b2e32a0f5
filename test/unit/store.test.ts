// The IMAP store's rendered Exim/Dovecot configuration (pure; the lab test store.test.ts proves it with mail).
import { describe, expect, it } from "vitest";
import { parseStackConfig } from "../../lib/config";
import { planImap } from "../../lib/roles";
import { stackConfig } from "./stackConfig";

const plan = planImap(parseStackConfig(stackConfig("lab")), "sanger");
const file = (p: string) => {
    const f = plan.files.find((x) => x.path === p);
    if (!f) throw new Error(`${p} not planned`);
    return f;
};
const exim = file("/etc/exim4/exim4.conf").content;
const router = (name: string) => exim.slice(exim.indexOf(`\n${name}:\n`), exim.indexOf("\n\n", exim.indexOf(`\n${name}:\n`) + 1));

/** The UNSAFE_FILTER macro as a JS regex (PCRE's inline (?i) becomes the i flag). */
const unsafe = new RegExp(/^UNSAFE_FILTER = \\N\(\?i\)(.*)\\N$/m.exec(exim)![1], "i");

describe("IMAP store rendering", () => {
    it("routes user_left, user_filter, local_user, smart_route in that order", () => {
        const order = ["user_left", "user_filter", "local_user", "smart_route"].map((r) => exim.indexOf(`\n${r}:\n`));
        expect(order.every((p) => p > 0)).toBe(true);
        expect([...order].sort((a, b) => a - b)).toEqual(order);
    });

    it("forbids pipes, run, readfile, lookups and includes in user filters and skips a broken filter", () => {
        const r = router("user_filter");
        for (const opt of ["forbid_pipe", "forbid_include", "forbid_filter_run", "forbid_filter_readfile", "forbid_filter_lookup", "forbid_filter_perl", "forbid_filter_dlfunc", "forbid_filter_readsocket", "skip_syntax_errors"])
            expect(r).toMatch(new RegExp(`^  ${opt}$`, "m"));
        expect(r).toMatch(/router_home_directory = VMAIL\/\$domain_data\/\$local_part_data/);
    });

    it.each([
        ['pipe "/bin/sh -c id"'],
        ["save ../bob/"],
        ["save .Junk/../../bob/"],
        ["save /etc/"],
        ['logfile "/tmp/x"'],
        ['mail text "x" once /tmp/once'],
    ])("treats a filter with %s as unsafe", (line) => {
        expect(unsafe.test(`# Exim filter\n${line}\n`)).toBe(true);
    });

    it.each([
        ['if $h_X-Spam-Score: matches "\\\\N\\\\(\\\\+{5,}\\\\)\\\\N" then\n  save .Junk/\nendif'],
        ['if $h_X-Mailinfra-Project: contains "apollo" then save .Projects/ endif'],
        ['if personal then mail to $reply_address subject "away" text "back on 3/4" once .vacation.db once_repeat 7d endif'],
    ])("accepts the ordinary filter %s", (text) => {
        expect(unsafe.test(`# Exim filter\n${text}\n`)).toBe(false);
    });

    it("keeps the seed's Maildir++ quota semantics with the Dovecot maildirfolder fix", () => {
        const t = exim.slice(exim.indexOf("\nmaildir_delivery:\n"));
        for (const line of [
            "quota = ${if !eq{$received_protocol}{local}{${extract{quota}{$address_data}{${value}K}{0}}}}",
            "quota_directory = $home",
            "quota_is_inclusive = false",
            "quota_warn_threshold = 100%",
            "maildir_use_size_file",
            "maildir_tag = ,S=$message_size",
            "maildir_quota_directory_regex = ^(?:cur|new|\\.(?!Trash).*)$",
            "create_file = belowhome",
        ])
            expect(t).toContain(`  ${line}\n`);
    });

    it("gives Dovecot the same quota (maildir backend, Trash exempt), IMAP only and no plaintext listener", () => {
        const d = file("/etc/dovecot/dovecot.conf").content;
        expect(d).toMatch(/quota = maildir:User quota/);
        expect(d).toMatch(/quota_rule2 = Trash:ignore/);
        expect(d).toMatch(/^protocols = imap$/m);
        expect(d).toMatch(/^ssl = required$/m);
        expect(d).toMatch(/inet_listener imap \{\n\s+port = 0/);
        expect(d).not.toMatch(/login_trusted_networks/);
    });

    it("validates the default filter with exim -bf before it goes live", () => {
        expect(file("/etc/exim4/default_user_filter").validate).toMatch(/exim4 -bf/);
    });
});
