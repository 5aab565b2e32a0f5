// The committed rendering of every prod host (rendered/prod/**) must match the program's output,
// so a pull request shows the exact file-level change on each host. Update with `npx vitest -u`.
import { describe, expect, it } from "vitest";
import { parseStackConfig } from "../../lib/config";
import { renderedFiles } from "../../lib/review";
import { planFleet } from "../../lib/roles";
import { stackConfig } from "./stackConfig";

describe("committed prod rendering", () => {
    const plans = planFleet(parseStackConfig(stackConfig("prod")));
    for (const plan of plans) {
        for (const [file, text] of Object.entries(renderedFiles(plan))) {
            it(`${plan.host}: ${file}`, async () => {
                await expect(text).toMatchFileSnapshot(`../../rendered/prod/${plan.host}/${file}`);
            });
        }
    }
});
