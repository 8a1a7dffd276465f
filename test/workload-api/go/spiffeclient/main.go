// spiffeclient is an application built on go-spiffe v2, the SPIFFE project's Workload API client, used by
// test/workload-api to check citadel's agent the way real applications use it. Every subcommand finds the agent
// through SPIFFE_ENDPOINT_SOCKET (the convention the Workload API endpoint spec defines) and prints one JSON
// object per line on stdout; errors go to stderr with a non-zero exit.
//
//	x509 -updates N             X509Source: print each distinct SVID (verified against the source's own bundle)
//	jwt -audience A [-bundle-updates N]
//	                            JWTSource: fetch a JWT-SVID, validate it locally and through the agent; with
//	                            -bundle-updates, wait for N JWT bundle changes and fetch + validate after each
//	serve -listen ADDR -allow-td TD
//	                            mTLS HTTPS server on the X509Source; answers with the caller's SPIFFE ID
//	get -url URL -server-id ID  mTLS HTTPS client on the X509Source; prints the answer
//	fetch-bundle -url URL -trust-domain TD -endpoint-id ID
//	                            SPIFFE bundle endpoint (https_spiffe profile) checked with the Workload API bundle
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/federation"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func main() {
	if len(os.Args) < 2 {
		fail(errors.New("usage: spiffeclient x509|jwt|serve|get|fetch-bundle [flags]"))
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	timeout := fs.Duration("timeout", 60*time.Second, "overall deadline")
	updates := fs.Int("updates", 1, "x509: distinct SVIDs to print before exiting")
	audience := fs.String("audience", "", "jwt: audience")
	bundleUpdates := fs.Int("bundle-updates", 0, "jwt: JWT bundle changes to wait for")
	listen := fs.String("listen", "127.0.0.1:0", "serve: address")
	allowTd := fs.String("allow-td", "", "serve: trust domain whose members may call")
	url := fs.String("url", "", "get/fetch-bundle: URL")
	serverID := fs.String("server-id", "", "get: SPIFFE ID the server must have")
	trustDomain := fs.String("trust-domain", "", "fetch-bundle: trust domain of the bundle")
	endpointID := fs.String("endpoint-id", "", "fetch-bundle: SPIFFE ID of the bundle endpoint")
	_ = fs.Parse(os.Args[2:])
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	var err error
	switch os.Args[1] {
	case "x509":
		err = watchX509(ctx, *updates)
	case "jwt":
		err = jwt(ctx, *audience, *bundleUpdates)
	case "serve":
		err = serve(ctx, *listen, *allowTd)
	case "get":
		err = get(ctx, *url, *serverID)
	case "fetch-bundle":
		err = fetchBundle(ctx, *url, *trustDomain, *endpointID)
	default:
		err = fmt.Errorf("unknown subcommand %q", os.Args[1])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "spiffeclient:", err)
	os.Exit(1)
}

func emit(v any) {
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func watchX509(ctx context.Context, updates int) error {
	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		return err
	}
	defer source.Close()
	seen := map[string]bool{}
	for len(seen) < updates {
		svid, err := source.GetX509SVID()
		if err != nil {
			return err
		}
		serial := svid.Certificates[0].SerialNumber.Text(16)
		if !seen[serial] {
			seen[serial] = true
			_, _, verr := x509svid.Verify(svid.Certificates, source)
			bundle, _ := source.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
			roots := 0
			if bundle != nil {
				roots = len(bundle.X509Authorities())
			}
			emit(map[string]any{
				"spiffeId": svid.ID.String(), "serial": serial, "notAfter": svid.Certificates[0].NotAfter,
				"chainLength": len(svid.Certificates), "roots": roots, "verified": verr == nil, "verifyError": errText(verr),
			})
			if len(seen) >= updates {
				break
			}
		}
		select {
		case <-source.Updated():
		case <-ctx.Done():
			return fmt.Errorf("waiting for X.509 update %d: %w", len(seen)+1, ctx.Err())
		}
	}
	return nil
}

func keyIDs(b *jwtbundle.Bundle) []string {
	ids := []string{}
	for id := range b.JWTAuthorities() {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

func jwt(ctx context.Context, audience string, bundleUpdates int) error {
	source, err := workloadapi.NewJWTSource(ctx)
	if err != nil {
		return err
	}
	defer source.Close()
	check := func(round int) error {
		svid, err := source.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience})
		if err != nil {
			return err
		}
		token := svid.Marshal()
		local, lerr := jwtsvid.ParseAndValidate(token, source, []string{audience})
		remote, rerr := workloadapi.ValidateJWTSVID(ctx, token, audience)
		bundle, err := source.GetJWTBundleForTrustDomain(svid.ID.TrustDomain())
		if err != nil {
			return err
		}
		out := map[string]any{
			"round": round, "spiffeId": svid.ID.String(), "audience": svid.Audience, "expiry": svid.Expiry,
			"tokenSha256": sha(token), "bundleKeyIds": keyIDs(bundle),
			"localValid": lerr == nil, "localError": errText(lerr), "agentValid": rerr == nil, "agentError": errText(rerr),
		}
		if local != nil {
			out["localSpiffeId"] = local.ID.String()
		}
		if remote != nil {
			out["agentSpiffeId"] = remote.ID.String()
			out["agentClaims"] = remote.Claims
		}
		emit(out)
		return nil
	}
	if err := check(0); err != nil {
		return err
	}
	for i := 1; i <= bundleUpdates; i++ {
		select {
		case <-source.Updated():
		case <-ctx.Done():
			return fmt.Errorf("waiting for JWT bundle update %d: %w", i, ctx.Err())
		}
		if err := check(i); err != nil {
			return err
		}
	}
	return nil
}

func serve(ctx context.Context, listen, allowTd string) error {
	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		return err
	}
	defer source.Close()
	td, err := spiffeid.TrustDomainFromString(allowTd)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	server := &http.Server{
		TLSConfig: tlsconfig.MTLSServerConfig(source, source, tlsconfig.AuthorizeMemberOf(td)),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			peer, err := x509svid.IDFromCert(r.TLS.PeerCertificates[0])
			if err != nil {
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			own, _ := source.GetX509SVID()
			_ = json.NewEncoder(w).Encode(map[string]string{"caller": peer.String(), "server": own.ID.String()})
		}),
	}
	emit(map[string]any{"listening": ln.Addr().String()})
	go func() {
		<-ctx.Done()
		_ = server.Close()
	}()
	if err := server.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func get(ctx context.Context, url, serverID string) error {
	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		return err
	}
	defer source.Close()
	id, err := spiffeid.FromString(serverID)
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(source, source, tlsconfig.AuthorizeID(id))}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	res, err := client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		return err
	}
	own, _ := source.GetX509SVID()
	emit(map[string]any{"status": res.StatusCode, "body": string(body), "client": own.ID.String()})
	return nil
}

func fetchBundle(ctx context.Context, url, trustDomain, endpointID string) error {
	source, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		return err
	}
	defer source.Close()
	td, err := spiffeid.TrustDomainFromString(trustDomain)
	if err != nil {
		return err
	}
	id, err := spiffeid.FromString(endpointID)
	if err != nil {
		return err
	}
	bundle, err := federation.FetchBundle(ctx, td, url, federation.WithSPIFFEAuth(source, id))
	if err != nil {
		return err
	}
	seq, _ := bundle.SequenceNumber()
	hint, _ := bundle.RefreshHint()
	ids := []string{}
	for id := range bundle.JWTAuthorities() {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	emit(map[string]any{
		"trustDomain": bundle.TrustDomain().String(), "sequence": seq, "refreshHintSeconds": hint.Seconds(),
		"x509Authorities": len(bundle.X509Authorities()), "jwtKeyIds": ids,
	})
	return nil
}

func sha(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:8])
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
