package devstack

import "stagesub.dev/registry"

// RouterCAFile is the file name of the internal CA's certificate in the
// router's TLS directory (router/certs.CACertFile).
const RouterCAFile = "ca.pem"

// RouterConfig is what the dev stack (and the whole-system test) sets for a
// router with TLS from the internal development CA.
type RouterConfig struct {
	ConsulAddr string
	BaseDomain string
	HTTPAddr   string // plain HTTP listener (redirects to HTTPS)
	HTTPSAddr  string // TLS listener
	AdminAddr  string // /healthz and /metrics listener, registered in Consul
	StateDir   string // the router's local state
	TLSDir     string // internal CA key and certificate (RouterCAFile)
}

// RouterEnv returns the router's environment for c (see router/README.md).
func RouterEnv(c RouterConfig) []string {
	return []string{
		registry.EnvConsulAddr + "=" + c.ConsulAddr,
		registry.EnvBaseDomain + "=" + c.BaseDomain,
		"STAGESUB_ROUTER_HTTP_ADDR=" + c.HTTPAddr,
		"STAGESUB_ROUTER_HTTPS_ADDR=" + c.HTTPSAddr,
		"STAGESUB_ROUTER_ADMIN_ADDR=" + c.AdminAddr,
		"STAGESUB_TLS_MODE=internal",
		"STAGESUB_STATE_DIR=" + c.StateDir,
		"STAGESUB_TLS_DIR=" + c.TLSDir,
	}
}
