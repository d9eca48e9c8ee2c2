package startup

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
)

// AWSConfig is the AWS configuration of a function, read from the Lambda environment alone:
// Lambda puts the Region in AWS_REGION and the execution role's credentials in
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN
// (https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime),
// which is where the SDK's default chain finds them in Lambda too. It also honours the SDK's
// endpoint settings (https://docs.aws.amazon.com/sdkref/latest/guide/feature-ss-endpoints.html,
// https://docs.aws.amazon.com/sdkref/latest/guide/feature-endpoints.html): AWS_ENDPOINT_URL and
// AWS_ENDPOINT_URL_<SERVICE> (service ID upper-cased, spaces as underscores), which the local
// stack sets, AWS_IGNORE_CONFIGURED_ENDPOINT_URLS, AWS_USE_FIPS_ENDPOINT and
// AWS_USE_DUALSTACK_ENDPOINT; and AWS_MAX_ATTEMPTS. Every client gets the retryer of newRetryer.
//
// Why not config.LoadDefaultConfig: it links the whole credential chain — SSO, SSO OIDC, sign-in,
// STS web identity, IMDS — whose packages' init alone costs a function about a quarter of an
// aws-lambda-go hello-world's cold start (make bench-cold), for sources a Lambda function never
// reads. The CLI, which runs on a person's machine with profiles, keeps the default chain.
//
// getenv is os.LookupEnv in production, and must agree with the process environment: the SDK's
// clients also look at AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE> in it themselves. Errors:
// AWS_REGION, AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY unset; AWS_MAX_ATTEMPTS not a positive
// integer; a boolean setting other than true or false (as the SDK refuses them).
func AWSConfig(getenv func(string) (string, bool)) (aws.Config, error) {
	get := func(name string) string { v, _ := getenv(name); return strings.TrimSpace(v) }
	var errs []error
	flag := func(name string) bool {
		switch v := strings.ToLower(get(name)); v {
		case "", "false":
			return false
		case "true":
			return true
		default:
			errs = append(errs, fmt.Errorf("%s=%q: want true or false", name, v))
			return false
		}
	}
	region := get("AWS_REGION")
	if region == "" {
		errs = append(errs, errors.New("AWS_REGION is not set (Lambda sets it)"))
	}
	id, secret := get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")
	if id == "" || secret == "" {
		errs = append(errs, errors.New("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set (Lambda sets them from the execution role)"))
	}
	src := endpointSettings{getenv: getenv, ignore: flag("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")}
	if flag("AWS_USE_FIPS_ENDPOINT") {
		src.fips = aws.FIPSEndpointStateEnabled
	}
	if flag("AWS_USE_DUALSTACK_ENDPOINT") {
		src.dualStack = aws.DualStackEndpointStateEnabled
	}
	cfg := aws.Config{
		Region:        region,
		Credentials:   aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(id, secret, get("AWS_SESSION_TOKEN"))),
		Retryer:       newRetryer,
		ConfigSources: []any{src},
	}
	if u := get("AWS_ENDPOINT_URL"); u != "" && !src.ignore {
		cfg.BaseEndpoint = aws.String(u)
	}
	if v := get("AWS_MAX_ATTEMPTS"); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("AWS_MAX_ATTEMPTS %q: want a positive integer", v))
		} else {
			cfg.RetryMaxAttempts = n
		}
	}
	return cfg, errors.Join(errs...)
}

// endpointSettings answers the questions the SDK's clients ask of aws.Config.ConfigSources
// when they are built (the SDK's internal/configsources interfaces, which its own environment
// source implements too): a service's configured endpoint, whether configured endpoints are
// ignored, and the FIPS and dual-stack choices.
type endpointSettings struct {
	getenv    func(string) (string, bool)
	ignore    bool
	fips      aws.FIPSEndpointState
	dualStack aws.DualStackEndpointState
}

// GetServiceBaseEndpoint returns AWS_ENDPOINT_URL_<sdkID, upper-cased, spaces as underscores>;
// a service variable wins over AWS_ENDPOINT_URL. Nothing when configured endpoints are ignored.
func (e endpointSettings) GetServiceBaseEndpoint(_ context.Context, sdkID string) (string, bool, error) {
	if e.ignore {
		return "", false, nil
	}
	v, _ := e.getenv("AWS_ENDPOINT_URL_" + strings.ReplaceAll(strings.ToUpper(sdkID), " ", "_"))
	v = strings.TrimSpace(v)
	return v, v != "", nil
}

// GetIgnoreConfiguredEndpoints is AWS_IGNORE_CONFIGURED_ENDPOINT_URLS.
func (e endpointSettings) GetIgnoreConfiguredEndpoints(context.Context) (bool, bool, error) {
	return e.ignore, e.ignore, nil
}

// GetUseFIPSEndpoint is AWS_USE_FIPS_ENDPOINT.
func (e endpointSettings) GetUseFIPSEndpoint(context.Context) (aws.FIPSEndpointState, bool, error) {
	return e.fips, e.fips != aws.FIPSEndpointStateUnset, nil
}

// GetUseDualStackEndpoint is AWS_USE_DUALSTACK_ENDPOINT.
func (e endpointSettings) GetUseDualStackEndpoint(context.Context) (aws.DualStackEndpointState, bool, error) {
	return e.dualStack, e.dualStack != aws.DualStackEndpointStateUnset, nil
}
