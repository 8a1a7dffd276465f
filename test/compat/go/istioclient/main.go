// Command istioclient asks a CA for a workload certificate the way Istio's agent (pilot-agent) does, using
// Istio's own code as a library (a Go module dependency; nothing is copied from it): the key and CSR come from
// security/pkg/pki/util GenCSR with the CertOptions the agent's secret cache builds, the call goes through
// security/pkg/nodeagent/caclient/providers/citadel (NewCitadelClient + CSRSign), and the token is read by the
// agent's JWT credential fetcher (security/pkg/credentialfetcher). The compat tests run it against
// `citadel ca` to prove that a real Istio agent can use our CA.
//
// With -renew, a second request is made with the first certificate as the TLS client certificate and no token,
// as the agent does in PROV_CERT mode (the key and chain are handed to Istio's client as files in a private
// temporary directory, because its TLS options take file paths; the directory is removed before exit).
//
// It prints one JSON object on stdout: {"certChain":[...], "error":"...", "code":"...", "renewal":{...}}.
// Istio's own logs go to stderr. The exit status is 0 whenever the JSON was written.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	istiolog "istio.io/istio/pkg/log"
	"istio.io/istio/pkg/security"
	"istio.io/istio/pkg/spiffe"
	"istio.io/istio/security/pkg/credentialfetcher"
	"istio.io/istio/security/pkg/nodeagent/caclient/providers/citadel"
	pkiutil "istio.io/istio/security/pkg/pki/util"
)

type options struct {
	caAddr         string
	caSAN          string
	rootCert       string
	tokenFile      string
	trustDomain    string
	namespace      string
	serviceAccount string
	ttl            time.Duration
	keyType        string
	renew          bool
}

// result is one CSRSign outcome. code is the gRPC status name parsed from the error text Istio's client
// returns ("create certificate: rpc error: code = X desc = ..."), empty when it is not a gRPC status.
type result struct {
	CertChain []string `json:"certChain"`
	Error     string   `json:"error,omitempty"`
	Code      string   `json:"code,omitempty"`
	Renewal   *result  `json:"renewal,omitempty"`
	key       []byte   // the private key of CertChain[0], kept in memory for -renew; never printed
}

func main() {
	var o options
	flag.StringVar(&o.caAddr, "ca-addr", "", "CA address host:port (CA_ADDR) (required)")
	flag.StringVar(&o.caSAN, "ca-san", "", "expected server name of the CA (ISTIOD_SAN); default: host of -ca-addr")
	flag.StringVar(&o.rootCert, "root-cert", "", "PEM roots that verify the CA's serving certificate (required)")
	flag.StringVar(&o.tokenFile, "token-file", "", "JWT file (the agent's istio-token); empty: no token")
	flag.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "TRUST_DOMAIN of the CSR's SPIFFE ID")
	flag.StringVar(&o.namespace, "namespace", "", "POD_NAMESPACE of the CSR's SPIFFE ID (required)")
	flag.StringVar(&o.serviceAccount, "service-account", "", "SERVICE_ACCOUNT of the CSR's SPIFFE ID (required)")
	flag.DurationVar(&o.ttl, "ttl", 24*time.Hour, "SECRET_TTL sent as validity_duration")
	flag.StringVar(&o.keyType, "key", "rsa", "rsa (pilot-agent's default, 2048 bits), ecdsa-p256 or ecdsa-p384")
	flag.BoolVar(&o.renew, "renew", false, "then renew with the issued certificate as the TLS client certificate, without a token")
	flag.Parse()
	if o.caAddr == "" || o.rootCert == "" || o.namespace == "" || o.serviceAccount == "" {
		fmt.Fprintln(os.Stderr, "istioclient: -ca-addr, -root-cert, -namespace and -service-account are required")
		os.Exit(2)
	}
	logOpts := istiolog.DefaultOptions()
	logOpts.OutputPaths = []string{"stderr"}
	logOpts.ErrorOutputPaths = []string{"stderr"}
	if err := istiolog.Configure(logOpts); err != nil {
		fmt.Fprintf(os.Stderr, "istioclient: configure logs: %v\n", err)
		os.Exit(2)
	}

	res := sign(o, o.tokenFile, nil)
	if o.renew && res.Error == "" {
		res.Renewal = renew(o, res)
	}
	out, _ := json.Marshal(res)
	fmt.Println(string(out))
}

// sign makes a fresh key and CSR and calls CSRSign once. tlsFiles, when set, are the client key and chain
// files for the TLS handshake (PROV_CERT mode).
func sign(o options, tokenFile string, tlsFiles *citadel.TLSOptions) (res *result) {
	res = &result{}
	fail := func(err error) *result {
		res.Error = err.Error()
		if m := regexp.MustCompile(`code = (\w+)`).FindStringSubmatch(res.Error); m != nil {
			res.Code = m[1]
		}
		return res
	}
	keyPem, csrPem, err := generate(o)
	if err != nil {
		return fail(err)
	}
	client, err := newClient(o, tokenFile, tlsFiles)
	if err != nil {
		return fail(err)
	}
	defer client.Close()
	chain, err := client.CSRSign(csrPem, int64(o.ttl.Seconds()))
	if err != nil {
		return fail(err)
	}
	res.CertChain = chain
	res.key = keyPem
	return res
}

// generate builds the key and CSR as the agent's secret cache does: SAN = spiffe://<td>/ns/<ns>/sa/<sa>.
func generate(o options) (keyPem, csrPem []byte, err error) {
	certOpts := pkiutil.CertOptions{
		Host:       spiffe.Identity{TrustDomain: o.trustDomain, Namespace: o.namespace, ServiceAccount: o.serviceAccount}.String(),
		RSAKeySize: 2048,
	}
	switch o.keyType {
	case "rsa":
	case "ecdsa-p256":
		certOpts.ECSigAlg, certOpts.ECCCurve = pkiutil.EcdsaSigAlg, pkiutil.P256Curve
	case "ecdsa-p384":
		certOpts.ECSigAlg, certOpts.ECCCurve = pkiutil.EcdsaSigAlg, pkiutil.P384Curve
	default:
		return nil, nil, fmt.Errorf("unknown -key %q", o.keyType)
	}
	csrPem, keyPem, err = pkiutil.GenCSR(certOpts)
	return keyPem, csrPem, err
}

// newClient builds Istio's Citadel CA client with the options pilot-agent derives from its environment.
func newClient(o options, tokenFile string, tlsFiles *citadel.TLSOptions) (*citadel.CitadelClient, error) {
	credFetcher, err := credentialfetcher.NewCredFetcher(security.JWT, o.trustDomain, tokenFile, "")
	if err != nil {
		return nil, err
	}
	secOpts := &security.Options{
		CAEndpoint:        o.caAddr,
		CAEndpointSAN:     o.caSAN,
		CAProviderName:    "Citadel",
		TrustDomain:       o.trustDomain,
		WorkloadNamespace: o.namespace,
		ServiceAccount:    o.serviceAccount,
		ClusterID:         "Kubernetes",
		CredFetcher:       credFetcher,
	}
	tlsOpts := &citadel.TLSOptions{RootCert: o.rootCert}
	if tlsFiles != nil {
		tlsOpts.Key, tlsOpts.Cert = tlsFiles.Key, tlsFiles.Cert
	}
	return citadel.NewCitadelClient(secOpts, tlsOpts)
}

// renew writes the first key and chain to a private temporary directory (key.pem, cert-chain.pem: the
// PROV_CERT layout) and signs a new CSR authenticated only by that client certificate.
func renew(o options, first *result) *result {
	dir, err := os.MkdirTemp("", "istioclient-")
	if err != nil {
		return &result{Error: err.Error()}
	}
	defer os.RemoveAll(dir)
	files := &citadel.TLSOptions{Key: filepath.Join(dir, "key.pem"), Cert: filepath.Join(dir, "cert-chain.pem")}
	if err := os.WriteFile(files.Key, first.key, 0o600); err != nil {
		return &result{Error: err.Error()}
	}
	if err := os.WriteFile(files.Cert, []byte(joinPem(first.CertChain)), 0o600); err != nil {
		return &result{Error: err.Error()}
	}
	return sign(o, "", files)
}

// joinPem concatenates PEM elements, each ending in a newline (elements need not end in one).
func joinPem(elements []string) string {
	var b strings.Builder
	for _, e := range elements {
		b.WriteString(strings.TrimSpace(e))
		b.WriteString("\n")
	}
	return b.String()
}
