package cyberark_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets/cyberark"
)

func TestConfigDecode(t *testing.T) {
	const y = `
url: https://ccp.example.com
app_id: mtlsrelay
folder: Root\Partners
timeout: 3s
client_keystore: file:/etc/mtlsrelay/ccp-client.p12
client_password: env:CCP_CLIENT_PASSWORD
truststore: file:/etc/mtlsrelay/ccp-ca.pem
reason: mtlsrelay worker
`
	var fromYAML cyberark.Config
	dec := yaml.NewDecoder(strings.NewReader(y))
	dec.KnownFields(true)
	if err := dec.Decode(&fromYAML); err != nil {
		t.Fatal(err)
	}
	want := cyberark.Config{
		URL: "https://ccp.example.com", AppID: "mtlsrelay", Folder: `Root\Partners`, Timeout: 3 * time.Second,
		ClientKeystore: "file:/etc/mtlsrelay/ccp-client.p12", ClientPassword: "env:CCP_CLIENT_PASSWORD",
		Truststore: "file:/etc/mtlsrelay/ccp-ca.pem", Reason: "mtlsrelay worker",
	}
	if fromYAML != want {
		t.Errorf("YAML decoded %#v, want %#v", fromYAML, want)
	}
	if err := fromYAML.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	for _, js := range []string{
		`{"url":"https://ccp.example.com","app_id":"mtlsrelay","timeout":"3s"}`,
		`{"url":"https://ccp.example.com","app_id":"mtlsrelay","timeout":3000000000}`,
	} {
		var c cyberark.Config
		if err := json.Unmarshal([]byte(js), &c); err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		if c.Timeout != 3*time.Second || c.AppID != "mtlsrelay" {
			t.Errorf("%s decoded %#v", js, c)
		}
	}
	var c cyberark.Config
	if err := json.Unmarshal([]byte(`{"timeout":"soon"}`), &c); err == nil {
		t.Error("a timeout that is not a duration decoded")
	}
}

func TestConfigRedacted(t *testing.T) {
	cfg := cyberark.Config{URL: "https://ccp.example.com", AppID: "a", Timeout: time.Second,
		ClientKeystore: "base64:" + strings.Repeat("QUJD", 8), ClientPassword: "value:" + clientPassword}
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	log := zerolog.New(&logs)
	log.Info().Object("cyberark", cfg).Msg("config")
	for what, s := range map[string]string{
		"%v": fmt.Sprintf("%v", cfg), "%+v": fmt.Sprintf("%+v", cfg), "%#v": fmt.Sprintf("%#v", cfg), "%s": fmt.Sprintf("%s", cfg),
		"JSON": string(js), "YAML": string(y), "zerolog": logs.String(),
	} {
		if strings.Contains(s, clientPassword) || strings.Contains(s, "QUJD") {
			t.Errorf("%s output holds an inline secret: %s", what, s)
		}
		if !strings.Contains(s, "[redacted]") {
			t.Errorf("%s output does not show the redaction: %s", what, s)
		}
	}
	if !strings.Contains(string(js), `"timeout":"1s"`) {
		t.Errorf("JSON timeout is not a duration string: %s", js)
	}
}

func TestServicePath(t *testing.T) {
	e := startCCP(t, envOptions{})
	for _, u := range []string{e.ccp.URL(), e.ccp.URL() + "/", e.ccp.URL() + "/AIMWebService", e.ccp.URL() + "/AIMWebService/api/Accounts"} {
		cfg := e.config()
		cfg.URL = u
		if _, err := e.sources(t, cfg).Fetch(context.Background(), mustRef(t, "cyberark:Partners/partner-a-password")); err != nil {
			t.Errorf("url %s: %v", u, err)
		}
	}
}

func TestParseLocator(t *testing.T) {
	for _, tc := range []struct {
		body string
		want cyberark.Locator
	}{
		{"S/o", cyberark.Locator{Safe: "S", Object: "o", Property: "Content"}},
		{"S/o#UserName", cyberark.Locator{Safe: "S", Object: "o", Property: "UserName"}},
		{"My Safe/Operating System-host-user#Address", cyberark.Locator{Safe: "My Safe", Object: "Operating System-host-user", Property: "Address"}},
		{"S/a#b#Content", cyberark.Locator{Safe: "S", Object: "a#b", Property: "Content"}},
	} {
		got, err := cyberark.ParseLocator(tc.body)
		if err != nil || got != tc.want {
			t.Errorf("ParseLocator(%q) = %+v, %v; want %+v", tc.body, got, err, tc.want)
		}
	}
	for _, bad := range []string{"S", "/o", "S/", "S/o#", "S/a+b", "S/a%20b"} {
		if _, err := cyberark.ParseLocator(bad); jobs.CodeOf(err) != jobs.CodeKeystoreInvalid {
			t.Errorf("ParseLocator(%q) = %v, want keystore_invalid", bad, err)
		}
	}
}
