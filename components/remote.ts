// Typed program-side handles for the resources served by the mailinfra provider (provider/).
import * as pulumi from "@pulumi/pulumi";

export interface ConnectionArgs {
    host: pulumi.Input<string>;
    port?: pulumi.Input<number>;
    user?: pulumi.Input<string>;
    privateKeyPath?: pulumi.Input<string>;
    privateKey?: pulumi.Input<string>;
}

export interface RemoteFileArgs {
    connection: pulumi.Input<ConnectionArgs>;
    path: pulumi.Input<string>;
    content: pulumi.Input<string>;
    mode: pulumi.Input<string>;
    owner: pulumi.Input<string>;
    group: pulumi.Input<string>;
    validate?: pulumi.Input<string>;
    keepOnDelete?: pulumi.Input<boolean>;
}

/** A file on a host, written atomically after its check passed on the host. */
export class RemoteFile extends pulumi.CustomResource {
    public readonly sha256!: pulumi.Output<string>;
    constructor(name: string, args: RemoteFileArgs, opts?: pulumi.CustomResourceOptions) {
        super("mailinfra:host:File", name, { ...args, sha256: undefined }, opts);
    }
}

export interface PackagesArgs {
    connection: pulumi.Input<ConnectionArgs>;
    packages: pulumi.Input<string[]>;
    debconf?: pulumi.Input<string>;
}

/** Debian packages installed non-interactively, keeping existing conffiles. */
export class Packages extends pulumi.CustomResource {
    /** The host's install id (new after a re-image): steps on other hosts that feed this one re-run on its change. */
    public readonly installId!: pulumi.Output<string>;
    constructor(name: string, args: PackagesArgs, opts?: pulumi.CustomResourceOptions) {
        super("mailinfra:host:Packages", name, { ...args, installId: undefined }, opts);
    }
}

export interface ScriptArgs {
    connection: pulumi.Input<ConnectionArgs>;
    create: pulumi.Input<string>;
    update?: pulumi.Input<string>;
    delete?: pulumi.Input<string>;
    triggers?: pulumi.Input<unknown[]>;
    stdin?: pulumi.Input<string>;
    /** Read-only check for refresh: exit 0 when in place; otherwise `up --refresh` re-runs the step. */
    probe?: pulumi.Input<string>;
}

/** An idempotent bash step; re-runs `update` (or `create`) when any input changes or its probe fails on refresh. */
export class Script extends pulumi.CustomResource {
    public readonly stdout!: pulumi.Output<string>;
    constructor(name: string, args: ScriptArgs, opts?: pulumi.CustomResourceOptions) {
        super("mailinfra:host:Script", name, { ...args, stdout: undefined }, opts);
    }
}
