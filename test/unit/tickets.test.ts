// The ticket hosts' plans (pure): config errors named by key, taint-safe pipes, secrets kept off the plan.
import { describe, expect, it } from "vitest";
import { parseStackConfig } from "../../lib/config";
import { planOtrs, planRt } from "../../lib/roles";
import { labWith, problemsOf, stackConfig } from "./stackConfig";

const problemsWith = (mutate: (c: any) => void) => problemsOf(labWith(mutate));

const lab = () => parseStackConfig(stackConfig("lab"));
const fileOf = (plan: { files: { path: string; content: string }[] }, path: string) => plan.files.find((f) => f.path === path)!.content;

describe("ticket hosts config", () => {
    it("refuses an RT queue name that collides with the comment suffix or is not a plain name", () => {
        expect(problemsWith((c) => (c.tickets.rt.queues = ["support-comment"]))[0]).toMatch(/^mailinfra:tickets\.rt\.queues\[0\]: must match pattern/);
        expect(problemsWith((c) => (c.tickets.rt.queues = ["Gen;eral"]))[0]).toMatch(/^mailinfra:tickets\.rt\.queues\[0\]/);
    });

    it("refuses a seeded OTRS queue address outside relay.otrs.domains", () => {
        expect(problemsWith((c) => c.tickets.otrs.queueAddresses.push({ address: "q@wikiquote.test", name: "Q" }))).toEqual([
            "mailinfra:tickets.otrs.queueAddresses: q@wikiquote.test is not in a domain of relay.otrs.domains",
        ]);
    });
});

describe("RT host plan", () => {
    const plan = planRt(lab(), "streber");
    const exim = fileOf(plan, "/etc/exim4/exim4.conf");

    it("feeds rt-mailgate only the rendered queue name and a literal action (no tainted pipe argument)", () => {
        expect(exim).toMatch(/local_parts = lsearch,ret=key;\/etc\/exim4\/rt_queues/);
        expect(exim).toContain('command = /usr/bin/rt-mailgate --queue $local_part_data --action "${if eq{$local_part_suffix}{-comment}{comment}{correspond}}" --url http://localhost/rt');
        expect(exim).not.toMatch(/command = .*\$local_part(?!_data|_suffix)/);
        expect(fileOf(plan, "/etc/exim4/rt_queues")).toMatch(/^general\nsupport\n$/m);
    });

    it("accepts RT mail from the relays only", () => {
        expect(exim).toMatch(/hostlist relays = 198\.51\.100\.11 : 198\.51\.100\.13/);
    });
});

describe("OTRS host plan", () => {
    const plan = planOtrs(lab(), "otrs");

    it("hands queue mail to Znuny's gateway with a constant command", () => {
        expect(fileOf(plan, "/etc/exim4/exim4.conf")).toContain("command = /usr/share/otrs/bin/otrs.Console.pl Maint::PostMaster::Read");
    });

    it("grants the relays SELECT on system_address only, with the password from stdin", () => {
        const step = plan.steps.find((s) => s.name === "ticket-db-accounts")!;
        expect(step.secretStdin).toBe("otrsDbPassword");
        expect(step.script).toContain("GRANT SELECT ON otrs.system_address TO 'exim'@'$c'");
        expect(step.script).toContain("clients=('198.51.100.11' '198.51.100.13' 'localhost')");
        expect(step.script).not.toMatch(/GRANT (ALL|INSERT|UPDATE|DELETE)/);
    });

    it("binds the ticket DB to the host address", () => {
        expect(fileOf(plan, "/etc/mysql/mariadb.conf.d/60-mailinfra.cnf")).toContain("bind-address = 198.51.100.14");
    });
});
