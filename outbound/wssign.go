package outbound

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/xml"
	"errors"
	"fmt"

	"github.com/mtlsrelay/mtlsrelay/jobs"
	"github.com/mtlsrelay/mtlsrelay/outbound/wss"
	"github.com/mtlsrelay/mtlsrelay/secrets"
)

// signEnvelope signs a SOAP request's envelope with WS-Security, with the
// key and certificate of mat: the profile's, as resolved for this call, so
// that a rotated keystore signs the next call with its new identity.
func signEnvelope(call *jobs.Call, envelope []byte, w *secrets.WSS, mat *secrets.Material) ([]byte, *jobs.Error) {
	var key crypto.Signer
	if mat != nil && mat.Config != nil && len(mat.Config.Certificates) > 0 {
		key, _ = mat.Config.Certificates[0].PrivateKey.(crypto.Signer)
	}
	if key == nil || mat.Leaf == nil {
		return nil, jobs.Errorf(jobs.CodeKeystoreInvalid, "connection %s signs SOAP requests (soap.wss), but profile %s gives no private key and certificate that can sign", call.Connection, profileName(mat))
	}
	opts := wss.Options{TTL: w.TTL()}
	for _, h := range w.SignHeaders {
		space, local, err := secrets.ParseClarkName(h)
		if err != nil {
			return nil, jobs.Errorf(jobs.CodeInvalidCall, "soap.wss.sign_headers of connection %s: %v", call.Connection, err)
		}
		opts.SignHeaders = append(opts.SignHeaders, xml.Name{Space: space, Local: local})
	}
	signed, err := wss.Sign(envelope, mat.Leaf, key, opts)
	var missing *wss.MissingHeaderError
	switch {
	case err == nil:
		return signed, nil
	case errors.As(err, &missing):
		return nil, jobs.Errorf(jobs.CodeInvalidCall, "connection %s signs the SOAP header block %s (soap.wss.sign_headers), and the call's soap.header does not have it", call.Connection, missing.Name)
	case errors.Is(err, wss.ErrKey):
		return nil, jobs.Errorf(jobs.CodeKeystoreInvalid, "profile %s cannot sign SOAP requests (soap.wss of connection %s): %v", profileName(mat), call.Connection, err)
	default:
		// The rest of the envelope is the call's: its soap.header (a
		// wsse:Security header of its own, a signed block given twice).
		return nil, jobs.Errorf(jobs.CodeInvalidCall, "the SOAP request of call %s cannot be signed (soap.wss of connection %s): %v", call.ID, call.Connection, err)
	}
}

// verifyResponseWSS checks the WS-Security signature of a response, against
// the profile's truststore (the system roots when it has none, which
// needs w.VerifySigner: any publicly trusted certificate would do
// otherwise), and that the signer is one w.VerifySigner names and not the
// profile's own certificate (a reflected request). A 2xx with an empty
// body (a one-way operation's 202) has nothing to verify and passes.
func verifyResponseWSS(call *jobs.Call, host string, body []byte, w *secrets.WSS, mat *secrets.Material) *jobs.Error {
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	fail := func(format string, args ...any) *jobs.Error {
		return jobs.Errorf(jobs.CodeSOAPSignatureInvalid, "the response of %s to call %s failed WS-Security verification (soap.wss.verify_response of connection %s): %s", host, call.ID, call.Connection, fmt.Sprintf(format, args...))
	}
	opts := wss.VerifyOptions{}
	if mat != nil && mat.Config != nil {
		opts.Roots = mat.Config.RootCAs
	}
	if opts.Roots == nil && (w == nil || len(w.VerifySigner) == 0) {
		return fail("profile %s has no truststore and soap.wss.verify_signer is empty; the system roots alone are not accepted for message signatures", profileName(mat))
	}
	signer, err := wss.Verify(body, opts)
	if err != nil {
		return fail("%v", err)
	}
	if mat != nil && mat.Leaf != nil && signer.Equal(mat.Leaf) {
		return fail("the response is signed with the profile's own certificate (a reflected request?)")
	}
	if !w.SignerAccepted(signer) {
		return fail("the signing certificate %q (SHA-256 %x) is not one soap.wss.verify_signer names", signer.Subject.String(), sha256.Sum256(signer.Raw))
	}
	return nil
}

func profileName(mat *secrets.Material) string {
	if mat == nil {
		return "?"
	}
	return mat.Profile
}
