package registry

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// sealedShown stands for a sealed field wherever a profile is printed.
const sealedShown = "[sealed]"

// ProfileEntry is a profile as the registry holds it.
type ProfileEntry struct {
	// Name is the profile's name.
	Name string
	// Profile is the profile as workers use it: a sealed field reads
	// registry:profiles/<name>/<field>, never the sealed value.
	Profile secrets.Profile
	// Sealed lists the fields stored sealed: "password", "truststore_password".
	Sealed []string
	// KeystoreUploaded reports whether the keystore is the one stored at
	// keystores.<name>.
	KeystoreUploaded bool
	// Revision and Updated are those of the KV entry.
	Revision uint64
	Updated  time.Time
}

// MarshalJSON encodes the entry for people: inline references redacted and
// sealed fields shown as "[sealed]".
func (e ProfileEntry) MarshalJSON() ([]byte, error) {
	red, err := e.Profile.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var prof map[string]any
	if err := json.Unmarshal(red, &prof); err != nil {
		return nil, err
	}
	for _, f := range e.Sealed {
		prof[f] = sealedShown
	}
	return json.Marshal(struct {
		Name             string         `json:"name"`
		Profile          map[string]any `json:"profile"`
		KeystoreUploaded bool           `json:"keystore_uploaded"`
		Revision         uint64         `json:"revision"`
		Updated          time.Time      `json:"updated"`
	}{e.Name, prof, e.KeystoreUploaded, e.Revision, e.Updated})
}

// PutOption changes what PutProfile accepts.
type PutOption func(*putOptions)

type putOptions struct{ unreadable func(error) }

// AllowUnreadable makes PutProfile store a profile even when one of its
// references cannot be read where PutProfile runs (a variable set on the
// workers only, a scheme this build cannot fetch), so its keystore cannot be
// checked; report is called with the reason. Without it such a profile is
// refused with secret_unavailable. A keystore that can be read and does not
// open is refused either way.
func AllowUnreadable(report func(error)) PutOption {
	return func(o *putOptions) { o.unreadable = report }
}

// KeystoreRef is the reference of the keystore uploaded with profile name.
func KeystoreRef(name string) string { return secrets.SchemeRegistry + ":keystores/" + name }

// sealedRef is the reference workers use for a sealed field of profile name.
func sealedRef(name, field string) string {
	return secrets.SchemeRegistry + ":profiles/" + name + "/" + field
}

// PutProfile checks and stores profile name.
//
// When keystore is not empty it is the keystore's bytes: they are stored at
// keystores.<name> and the profile's keystore becomes registry:keystores/<name>
// (p.Keystore must then be empty or that reference). An inline keystore
// reference (base64:, an inline PEM block) is uploaded the same way.
//
// The profile is checked before anything is written: its references must
// parse and be readable here, and its keystore must open with its password
// and hold a client certificate valid now; a refusal is a *jobs.Error with
// the code of what failed (keystore_invalid, keystore_password_wrong,
// client_cert_expired, client_cert_not_yet_valid, secret_unavailable...)
// whose message starts "profile NAME not stored:". An uploaded keystore must
// protect its key with a password, as it is stored as it is.
//
// An inline password (value:TEXT) is stored sealed with the registry key
// (AES-256-GCM, associated data profiles.<name>/<field>); without a key it
// is refused. Other password references (env:, file:, vault:...) are stored
// as written, and read by the workers. A password reference
// registry:profiles/<name>/password keeps the password already sealed for
// this profile.
func (r *Registry) PutProfile(ctx context.Context, name string, p secrets.Profile, keystore []byte, opts ...PutOption) error {
	var o putOptions
	for _, f := range opts {
		f(&o)
	}
	if err := checkName("profile", name); err != nil {
		return err
	}
	uploaded := false // set once the keystore's bytes are known
	refuse := func(err error) error {
		je := jobs.AsError(err)
		msg := je.Message
		// The Resolver names the profile and the field; the registry says
		// "not stored" instead, and names an uploaded keystore as such
		// rather than by the inline reference it was checked as.
		var pe *secrets.ProfileError
		if errors.As(err, &pe) {
			switch {
			case pe.Field == "keystore" && uploaded:
				msg = "the uploaded keystore: " + pe.Err.Message
			case pe.Field != "":
				msg = pe.Field + " " + pe.Ref.String() + ": " + pe.Err.Message
			default:
				msg = pe.Err.Message
			}
		}
		out := jobs.Wrap(err, je.Code, "profile %s not stored: %s", name, msg)
		out.Retryable = je.Retryable
		return out
	}
	syntax := p
	if len(keystore) > 0 && syntax.Keystore == "" {
		syntax.Keystore = KeystoreRef(name)
	}
	if err := syntax.Validate(); err != nil {
		return refuse(err)
	}
	if ref, _ := secrets.ParseRef(p.Key); ref.IsInline() {
		return refuse(jobs.Errorf(jobs.CodeKeystoreInvalid,
			"its key is given inline, and the registry would store it in the clear; keep the key in a file: or vault: reference, or upload a password-protected keystore"))
	}
	upload := bytes.Clone(keystore)
	if len(upload) > 0 {
		if p.Keystore != "" && p.Keystore != KeystoreRef(name) {
			return refuse(jobs.Errorf(jobs.CodeKeystoreInvalid, "give the keystore's bytes or a keystore reference, not both"))
		}
	} else if ref, _ := secrets.ParseRef(p.Keystore); ref.IsInline() {
		sec, err := r.sources.Fetch(ctx, ref)
		if err != nil {
			return refuse(err)
		}
		upload = sec.Data
	}
	defer clear(upload)
	check := p
	uploaded = len(upload) > 0
	if uploaded {
		check.Keystore = "base64:" + base64.StdEncoding.EncodeToString(upload)
		if err := refuseUnprotected(upload); err != nil {
			return refuse(err)
		}
	}

	if err := r.verify(ctx, name, check, o); err != nil {
		return refuse(err)
	}

	// Fields to seal, and fields that keep the sealed value stored now.
	var key *sealKey
	stored := p
	if len(upload) > 0 {
		stored.Keystore = KeystoreRef(name)
	}
	var current *secrets.Profile
	for _, f := range []struct {
		field string
		text  *string
	}{{fieldPassword, &stored.Password}, {fieldTruststorePassword, &stored.TruststorePassword}} {
		if *f.text == sealedRef(name, f.field) {
			if current == nil {
				cur, err := r.storedProfile(ctx, name)
				if err != nil {
					return refuse(jobs.Wrap(err, jobs.CodeSecretUnavailable,
						"its %s refers to the one sealed for it, but the registry holds none: %v", f.field, err).WithRetryable(false))
				}
				current = &cur
			}
			kept := current.Password
			if f.field == fieldTruststorePassword {
				kept = current.TruststorePassword
			}
			if !isSealed(kept) {
				return refuse(jobs.Errorf(jobs.CodeSecretUnavailable,
					"its %s refers to the one sealed for it, but the registry holds no sealed %s for it; give the password", f.field, f.field).WithRetryable(false))
			}
			*f.text = kept
			continue
		}
		ref, _ := secrets.ParseRef(*f.text)
		if !ref.IsInline() {
			continue
		}
		if key == nil {
			k, err := r.key.get(ctx)
			if errors.Is(err, errNoKey) {
				return refuse(jobs.Errorf(jobs.CodeSecretUnavailable,
					"its %s is given as a value rather than a reference, and the registry stores such a password only sealed with the registry key, which is not configured: %s; "+
						"or store a reference the workers read instead, e.g. --password-ref env:NAME", f.field, keyHowTo).WithRetryable(false))
			}
			if err != nil {
				return refuse(err)
			}
			key = k
		}
		sec, err := r.sources.Fetch(ctx, ref)
		if err != nil {
			return refuse(err)
		}
		*f.text = key.seal(name, f.field, sec.Data)
		clear(sec.Data)
	}

	value, err := stored.MarshalUnredactedJSON()
	if err != nil {
		return err
	}
	if len(upload) > 0 {
		if _, err := r.kv.Put(ctx, prefixKeystores+name, upload); err != nil {
			return kvError(err, "store keystore of profile "+name)
		}
	}
	if _, err := r.kv.Put(ctx, prefixProfiles+name, value); err != nil {
		return kvError(err, "store profile "+name)
	}
	if stored.Keystore != KeystoreRef(name) {
		// A keystore uploaded before is no longer used: remove it and its history.
		if _, err := r.kv.Get(ctx, prefixKeystores+name); err == nil {
			if err := r.kv.Purge(ctx, prefixKeystores+name); err != nil {
				return kvError(err, "remove the keystore profile "+name+" no longer uses")
			}
		}
	}
	return nil
}

// refuseUnprotected refuses a keystore whose private key opens without a
// password: the registry stores uploaded keystores as they are.
func refuseUnprotected(data []byte) error {
	ks, err := secrets.DecodeKeystore(data, nil)
	if err != nil {
		return nil
	}
	for _, e := range ks.Entries {
		if e.IsKey() {
			return jobs.Errorf(jobs.CodeKeystoreInvalid,
				"the uploaded %s keystore's private key is not protected by a password, and the registry stores uploaded keystores as they are; "+
					"upload a password-protected keystore (openssl pkcs12 -export, or an encrypted PEM key), or keep it in a file: or vault: reference", strings.ToUpper(ks.Format))
		}
	}
	return nil
}

// verify checks that every reference of p can be read here and that the
// keystore opens with its password and holds a valid client certificate.
func (r *Registry) verify(ctx context.Context, name string, p secrets.Profile, o putOptions) error {
	for _, f := range []struct{ field, text string }{
		{"keystore", p.Keystore}, {"key", p.Key}, {fieldPassword, p.Password},
		{"truststore", p.Truststore}, {fieldTruststorePassword, p.TruststorePassword},
	} {
		if f.text == "" {
			continue
		}
		ref, err := secrets.ParseRef(f.text)
		if err != nil {
			return err
		}
		err = r.sources.Check(ref)
		if err == nil {
			var sec secrets.Secret
			sec, err = r.sources.Fetch(ctx, ref)
			clear(sec.Data)
			if err != nil && jobs.CodeOf(err) != jobs.CodeSecretUnavailable {
				return jobs.AsError(err)
			}
		}
		if err != nil {
			why := fmt.Sprintf("its %s %s cannot be read where this runs (%s)", f.field, ref, jobs.AsError(err).Message)
			if o.unreadable == nil {
				return jobs.Wrap(err, jobs.CodeSecretUnavailable,
					"%s, so its keystore cannot be checked here; make it readable here, "+
						"or store the profile unchecked if only the workers can read it (mtlsrelay profile put --no-verify)", why).WithRetryable(false)
			}
			o.unreadable(fmt.Errorf("profile %s stored without checking its keystore: %s", name, why))
			return nil
		}
	}
	_, err := secrets.NewResolver(r.sources, secrets.WithRefreshInterval(0)).Resolve(ctx, name, p)
	return err
}

// storedProfile reads profile name as stored, sealed fields included.
func (r *Registry) storedProfile(ctx context.Context, name string) (secrets.Profile, error) {
	e, err := r.getEntry(ctx, prefixProfiles+name)
	if err != nil {
		return secrets.Profile{}, err
	}
	return decodeStoredProfile(e.Value())
}

// GetProfile returns profile name; errors.Is(err, ErrNotFound) when absent.
// A sealed password is never returned, not even sealed.
func (r *Registry) GetProfile(ctx context.Context, name string) (*ProfileEntry, error) {
	if err := checkName("profile", name); err != nil {
		return nil, err
	}
	e, err := r.getEntry(ctx, prefixProfiles+name)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("profile %s is %w", name, ErrNotFound)
	}
	if err != nil {
		return nil, kvError(err, "read profile "+name)
	}
	return profileEntry(name, e)
}

// ListProfiles returns every profile, sorted by name. Entries whose value
// does not decode are left out; Watch logs them.
func (r *Registry) ListProfiles(ctx context.Context) ([]ProfileEntry, error) {
	var out []ProfileEntry
	err := r.scan(ctx, prefixProfiles, func(name string, e jetstream.KeyValueEntry) {
		if pe, err := profileEntry(name, e); err == nil {
			out = append(out, *pe)
		}
	})
	return out, err
}

// DeleteProfile removes profile name and the keystore uploaded with it,
// with their history; errors.Is(err, ErrNotFound) when absent.
func (r *Registry) DeleteProfile(ctx context.Context, name string) error {
	if err := checkName("profile", name); err != nil {
		return err
	}
	if _, err := r.getEntry(ctx, prefixProfiles+name); errors.Is(err, ErrNotFound) {
		return fmt.Errorf("profile %s is %w", name, ErrNotFound)
	} else if err != nil {
		return kvError(err, "read profile "+name)
	}
	// Purge, not Delete: older revisions hold sealed passwords and keystores.
	if err := r.kv.Purge(ctx, prefixProfiles+name); err != nil {
		return kvError(err, "remove profile "+name)
	}
	if _, err := r.kv.Get(ctx, prefixKeystores+name); err == nil {
		if err := r.kv.Purge(ctx, prefixKeystores+name); err != nil {
			return kvError(err, "remove the keystore of profile "+name)
		}
	}
	return nil
}

// scan calls fn for every live key under prefix, sorted by name.
func (r *Registry) scan(ctx context.Context, prefix string, fn func(name string, e jetstream.KeyValueEntry)) error {
	lister, err := r.kv.ListKeysFiltered(ctx, prefix+">")
	if err != nil {
		return kvError(err, "list "+strings.TrimSuffix(prefix, "."))
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		e, err := r.getEntry(ctx, k)
		if errors.Is(err, ErrNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return kvError(err, "read "+k)
		}
		fn(strings.TrimPrefix(k, prefix), e)
	}
	return nil
}

// decodeStoredProfile parses a profile's KV value.
func decodeStoredProfile(data []byte) (secrets.Profile, error) {
	var p secrets.Profile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		// The decoder's message may quote the value; say only where it failed.
		return secrets.Profile{}, errors.New("the value is not a profile's JSON")
	}
	return p, nil
}

// workerProfile turns a stored profile into the one workers use: sealed
// fields become registry:profiles/<name>/<field>. It returns the sealed
// fields' names.
func workerProfile(name string, p secrets.Profile) (secrets.Profile, []string) {
	var sealed []string
	if isSealed(p.Password) {
		p.Password = sealedRef(name, fieldPassword)
		sealed = append(sealed, fieldPassword)
	}
	if isSealed(p.TruststorePassword) {
		p.TruststorePassword = sealedRef(name, fieldTruststorePassword)
		sealed = append(sealed, fieldTruststorePassword)
	}
	return p, sealed
}

// profileEntry decodes the KV entry of profile name.
func profileEntry(name string, e jetstream.KeyValueEntry) (*ProfileEntry, error) {
	stored, err := decodeStoredProfile(e.Value())
	if err != nil {
		return nil, fmt.Errorf("registry profile %s (revision %d): %w", name, e.Revision(), err)
	}
	p, sealed := workerProfile(name, stored)
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("registry profile %s (revision %d): %w", name, e.Revision(), err)
	}
	return &ProfileEntry{
		Name: name, Profile: p, Sealed: sealed,
		KeystoreUploaded: p.Keystore == KeystoreRef(name),
		Revision:         e.Revision(), Updated: e.Created(),
	}, nil
}
