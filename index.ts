// Pulumi entry point: validate stack config, then converge every host of the fleet.
import { deployFleet, publishDns, readStackConfig } from "./components/fleet";

const cfg = readStackConfig();
const hosts = deployFleet(cfg);
publishDns(cfg);

export const fleet = Object.fromEntries(Object.entries(cfg.hosts).map(([name, h]) => [name, { role: h.role, address: h.address }]));
export const hostCount = Object.keys(hosts).length;
