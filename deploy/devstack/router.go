package devstack

import "stagesub.dev/registry"

// RouterCAFile is the file name of the internal CA's certificate in the
// router's CA directory.
const RouterCAFile = "root.crt"

// RouterConfig is what the dev stack (and the whole-system test) sets for a
// router with TLS from the internal development CA.
type RouterConfig struct {
	ConsulAddr  string
	BaseDomain  string
	HTTPAddr    string // plain HTTP listener
	HTTPSAddr   string // TLS listener
	CADir       string // internal CA key and certificate (RouterCAFile) live here
	MetricsAddr string // /metrics listener, registered in Consul
}

// RouterEnv returns the router's environment for c (see router/README.md).
func RouterEnv(c RouterConfig) []string {
	return []string{
		registry.EnvConsulAddr + "=" + c.ConsulAddr,
		registry.EnvBaseDomain + "=" + c.BaseDomain,
		"STAGESUB_HTTP_ADDR=" + c.HTTPAddr,
		"STAGESUB_HTTPS_ADDR=" + c.HTTPSAddr,
		"STAGESUB_TLS=internal",
		"STAGESUB_CA_DIR=" + c.CADir,
		"STAGESUB_METRICS_ADDR=" + c.MetricsAddr,
	}
}
