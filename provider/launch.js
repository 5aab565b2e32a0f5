// Entry point of the provider plugin: compiles provider/*.ts on load with the TypeScript
// compiler the project pins (through the ts-node that @pulumi/pulumi vendors), no build step.
const path = require("path");
const root = path.resolve(__dirname, "..");
const sdk = path.dirname(require.resolve("@pulumi/pulumi/package.json", { paths: [root] }));
const tsnode = require(path.join(sdk, "vendor", "ts-node@7.0.1"));
tsnode.register({
    transpileOnly: true,
    typeCheck: false,
    skipProject: true,
    compiler: require.resolve("typescript", { paths: [root] }),
    compilerOptions: { target: "ES2022", module: "commonjs", moduleResolution: "node", esModuleInterop: true },
});
require("./main.ts");
