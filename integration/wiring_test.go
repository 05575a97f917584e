package integration

import (
	"crypto/tls"
	"encoding/base64"
	"os"
	"strings"
	"testing"

	"github.com/mtlsrelay/mtlsrelay/internal/fakeccp"
	"github.com/mtlsrelay/mtlsrelay/internal/testvault"
)

// The worker's config file alone enables Vault and CyberArk: the real
// binary, `serve --config`, with profiles whose keystore and password live
// in a real Vault (KV v2) and in a CyberArk CCP.
func TestServeConfigWiresVaultAndCyberArk(t *testing.T) {
	p12, err := os.ReadFile(fixture(t, "client-openssl.p12"))
	if err != nil {
		t.Fatal(err)
	}
	keystore := base64.StdEncoding.EncodeToString(p12)

	v := testvault.Start(t)
	v.PutKV("secret", "partners/wired", map[string]any{"keystore": keystore, "password": fixturePassword})

	srvCert, err := tls.LoadX509KeyPair(fixture(t, "server.pem"), fixture(t, "server.key"))
	if err != nil {
		t.Fatal(err)
	}
	ccp, err := fakeccp.Start(fakeccp.Options{Certificate: srvCert, ClientCAs: poolFromPEM("ca.pem")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ccp.Close() })
	ccp.AllowAppIDs("mtlsrelay-wired")
	ccp.Add("Partners", "Root", "wired-keystore", map[string]string{"Content": keystore})
	ccp.Add("Partners", "Root", "wired-password", map[string]string{"Content": fixturePassword})

	srv := startNATS(t)
	partner := startPartner(t)
	cfg := writeConfig(t, `
worker: {concurrency: 4, admin_addr: "off", retry_base: 50ms}
registry: {disabled: true}
log: {level: debug, format: json}
vault:
  address: VAULTADDR
  auth: {method: token, token: "env:MTLSRELAY_TEST_VAULT_TOKEN"}
cyberark:
  url: CCPURL
  app_id: mtlsrelay-wired
  client_keystore: "file:FIX/client.pem"
  truststore: "file:FIX/ca.pem"
profiles:
  in-vault:    {keystore: "vault:secret/partners/wired#keystore", password: "vault:secret/partners/wired#password", truststore: "file:FIX/ca.pem"}
  in-cyberark: {keystore: "cyberark:Partners/wired-keystore", password: "cyberark:Partners/wired-password", truststore: "file:FIX/ca.pem"}
connections:
  via-vault:    {base_url: "PARTNER", profile: in-vault}
  via-cyberark: {base_url: "PARTNER", profile: in-cyberark}
`, "VAULTADDR", v.Addr, "CCPURL", ccp.URL(), "PARTNER", partner.URL())
	w := startWorkerProcess(t, srv.ClientURL(), cfg, "wired", "MTLSRELAY_TEST_VAULT_TOKEN="+v.RootToken)
	nc, js := connect(t, srv.ClientURL())
	for _, conn := range []string{"via-vault", "via-cyberark"} {
		t.Run("ok/"+conn, func(t *testing.T) {
			r := call(t, nc, js, conn, map[string]any{"path": "echo"})
			e := decodeEcho(t, r)
			if e.ClientCert == nil || e.ClientCert.Subject == "" {
				t.Errorf("partner saw no client certificate")
			}
		})
	}
	assertNoSecrets(t, "worker output", w.logs.String())
	if strings.Contains(w.logs.String(), v.RootToken) {
		t.Errorf("worker output contains the Vault token")
	}
}
