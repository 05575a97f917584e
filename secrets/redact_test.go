package secrets_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// TestRedaction prints values holding secrets every way a log line or an
// error might, and checks that no secret shows.
func TestRedaction(t *testing.T) {
	keyPEM := string(fixture(t, "client.pem"))
	keyB64 := base64.StdEncoding.EncodeToString(fixture(t, "client-openssl.p12"))
	// Distinctive pieces of each secret: a leak of any shows as one of them.
	leaks := []string{fixturePassword, "PRIVATE KEY", keyB64[100:140], keyPEM[len(keyPEM)-120 : len(keyPEM)-80]}

	pwRef, err := secrets.ParseRef("value:" + fixturePassword)
	if err != nil {
		t.Fatal(err)
	}
	b64Ref, err := secrets.ParseRef("base64:" + keyB64)
	if err != nil {
		t.Fatal(err)
	}
	pemRef, err := secrets.ParseRef(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	profile := secrets.Profile{
		Keystore:           "base64:" + keyB64,
		Password:           "value:" + fixturePassword,
		Truststore:         keyPEM,
		TruststorePassword: fixturePassword, // not even a valid reference
		KeyAlias:           "alpha",
	}
	values := map[string]any{
		"secret":         secrets.Secret{Data: []byte(fixturePassword), Version: "v1"},
		"secret-pointer": &secrets.Secret{Data: []byte(keyPEM)},
		"ref-value":      pwRef,
		"ref-base64":     b64Ref,
		"ref-pem":        pemRef,
		"profile":        profile,
		"nested":         struct{ P secrets.Profile }{profile},
		"profile-key":    secrets.Profile{Keystore: "file:/etc/tls.crt", Key: keyPEM},
	}
	for name, v := range values {
		t.Run("ok/"+name, func(t *testing.T) {
			outputs := map[string]string{}
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
				outputs[verb] = fmt.Sprintf(verb, v)
			}
			j, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			outputs["json"] = string(j)
			y, err := yaml.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			outputs["yaml"] = string(y)
			var buf bytes.Buffer
			log := zerolog.New(&buf)
			log.Info().Interface("v", v).Msg("interface")
			if o, ok := v.(zerolog.LogObjectMarshaler); ok {
				log.Info().Object("v", o).Msg("object")
			}
			if s, ok := v.(fmt.Stringer); ok {
				log.Info().Stringer("v", s).Msg("stringer")
			}
			outputs["zerolog"] = buf.String()
			for how, out := range outputs {
				if !strings.Contains(out, "redacted") {
					t.Errorf("%s output does not say it redacted anything: %s", how, out)
				}
				for _, leak := range leaks {
					if strings.Contains(out, leak) {
						t.Errorf("%s output leaks %q: %s", how, leak, out)
					}
				}
			}
		})
	}

	t.Run("ok/profile-fields-still-readable", func(t *testing.T) {
		out := fmt.Sprint(secrets.Profile{Keystore: "file:/etc/a.p12", Password: "env:PASS", KeyAlias: "alpha"})
		for _, want := range []string{"file:/etc/a.p12", "env:PASS", "alpha"} {
			if !strings.Contains(out, want) {
				t.Errorf("%q does not show %q", out, want)
			}
		}
	})

	t.Run("ok/unredacted-json-round-trips", func(t *testing.T) {
		j, err := profile.MarshalUnredactedJSON()
		if err != nil {
			t.Fatal(err)
		}
		var back secrets.Profile
		if err := json.Unmarshal(j, &back); err != nil {
			t.Fatal(err)
		}
		if back != profile {
			t.Error("MarshalUnredactedJSON does not round-trip")
		}
	})

	t.Run("fail/redacted-json-does-not-validate", func(t *testing.T) {
		j, _ := json.Marshal(secrets.Profile{Keystore: "file:/a.p12", Password: "value:" + fixturePassword})
		var back secrets.Profile
		if err := json.Unmarshal(j, &back); err != nil {
			t.Fatal(err)
		}
		if err := back.Validate(); err == nil || !strings.Contains(err.Error(), "redaction placeholder") {
			t.Errorf("Validate of a redacted profile = %v, want the placeholder error", err)
		}
	})
}
