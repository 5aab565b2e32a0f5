import { it } from "vitest";
import { parseStackConfig } from "../../lib/config";
import { planDnsRecords, renderUnbound, recordResourceNames } from "../../lib/dns";
import { stackConfig } from "./stackConfig";
it("scratch", () => {
  for (const s of ["lab", "prod"]) {
    const r = planDnsRecords(parseStackConfig(stackConfig(s)));
    console.log(s, r.length, JSON.stringify(Object.entries(r.reduce((a: any, x) => ((a[x.type] = (a[x.type] ?? 0) + 1), a), {}))));
    console.log(renderUnbound(r));
    if (s === "prod") console.log(recordResourceNames(r).join("\n"));
  }
});
