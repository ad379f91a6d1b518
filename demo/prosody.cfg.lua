-- The demo server that `make run` starts (tools/run-demo fills in the ENV_ values).
-- Loopback only, no TLS: for trying the components out, not for production.

local data = ENV_CPROXY_DATA;

run_as_root = ENV_CPROXY_AS_ROOT == "1";
pidfile = data .. "/prosody.pid";
data_path = data;
certificates = data; -- no TLS in the demo: an empty certificate dir
plugin_paths = { ENV_CPROXY_ROOT .. "/lua" };
log = { info = "*console" };

interfaces = { "127.0.0.1" };
c2s_ports = { tonumber(ENV_CPROXY_C2S_PORT) };
proxy65_ports = { tonumber(ENV_CPROXY_PROXY65_PORT) };
proxy65_interfaces = { "127.0.0.1" };
modules_enabled = { "roster", "saslauth", "disco", "ping", "version" };
modules_disabled = { "s2s", "tls" };
authentication = "internal_plain";
c2s_require_encryption = false;
allow_unencrypted_plain_auth = true;

VirtualHost "localhost"

Component "proxy.localhost" "proxy65"
	-- An address clients can use whatever their resolver makes of
	-- proxy.localhost (some answer NXDOMAIN).
	proxy65_address = { "127.0.0.1" }

Component "jat.localhost" "client_proxy"
	target_address = "svc@localhost"
