package ctl

import (
	"context"
	"fmt"

	"stagesub.dev/app/schema"
)

// Command is one stagesubctl command. Adding a command is adding a file
// with its Run function and one line in commands.
type Command struct {
	Name    string // words after "stagesubctl", e.g. "tenant create"
	Usage   string // shown in help
	Summary string
	Run     func(ctx context.Context, m *Main, args []string) error
}

// commands is the dispatch table; the longest matching Name wins.
var commands []*Command

func init() {
	commands = []*Command{
		{"help", "help", "show this help", runHelp},
		{"version", "version", "print the build version", runVersion},
		{"tenant create", "tenant create <slug> --name N [--admin-email E] [--domain D]... [--db-server S] [--backup-recipient age1...] [--start]", "create (or finish creating) a tenant", runTenantCreate},
		{"tenant list", "tenant list [--json]", "list tenants", runTenantList},
		{"tenant show", "tenant show <slug> [--json]", "record, instances, schema version, database size", runTenantShow},
		{"tenant suspend", "tenant suspend <slug>", "suspend a tenant (router shows the suspended page)", runTenantSuspend},
		{"tenant resume", "tenant resume <slug>", "resume a suspended tenant", runTenantResume},
		{"tenant repair", "tenant repair <slug> [--admin-email E]", "re-apply grants, lock-down, binding and env file of a tenant; report what was fixed", runTenantRepair},
		{"tenant domains", "tenant domains <slug> add|rm <domain>", "add or remove a custom domain", runTenantDomains},
		{"migrate", "migrate [--all | <slug>...] [--concurrency N] [--dry-run]", "run schema migrations on tenant databases", runMigrate},
		{"tenant delete", "tenant delete <slug> --confirm <slug> [--to DIR] [--recipient age1...] [--no-backup]", "final encrypted backup, then drop database, role, secret and record", runTenantDelete},
		{"tenant backup-key", "tenant backup-key <slug> [set <age1...> | clear]", "show or set the age public key backups are encrypted to", runTenantBackupKey},
		{"backup", "backup <slug>... | --all [--to DIR] [--concurrency N] [--keep N] [--recipient age1...]", "encrypted pg_dump of tenant databases, with manifest and retention", runBackup},
		{"restore", "restore <slug> --from FILE --identity KEYFILE [--into NEW_SLUG] [--force] [--drop-old]", "restore a backup into a fresh database and switch the tenant to it", runRestore},
		{"doctor", "doctor <slug>... | --all [--json]", "check DNS, record, database, instances, router and certificate of tenants", runDoctor},
		{"import-shared", "import-shared --from DSN --tenant-column COL --map ID=slug,... [--schema S] [--dry-run]", "split a legacy shared database into tenant databases (resumable)", runImportShared},
		{"nomad app-job", "nomad app-job <slug> [--variable] [--count N] [--bin-dir D] [--consul-addr A]", "print the Nomad job (or, with --variable, the Nomad Variable) of a tenant's app", runNomadAppJob},
		{"prometheus-sd", "prometheus-sd [--listen ADDR]", "serve Prometheus HTTP service discovery from Consul", runPrometheusSD},
		{"dev", "dev [args]", "run the whole stack on this machine", runDev},
	}
}

func runVersion(ctx context.Context, m *Main, args []string) error {
	fmt.Fprintf(m.Stdout, "stagesubctl %s (schema version %d)\n", Version, schema.Latest())
	return nil
}

func runHelp(ctx context.Context, m *Main, args []string) error {
	m.usage(m.Stdout)
	return nil
}
