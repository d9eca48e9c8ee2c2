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
// endpoint variables, AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE> (service ID upper-cased,
// spaces as underscores; https://docs.aws.amazon.com/sdkref/latest/guide/feature-ss-endpoints.html),
// which the local stack sets, AWS_IGNORE_CONFIGURED_ENDPOINT_URLS, and AWS_MAX_ATTEMPTS. Every
// client gets the retryer of newRetryer.
//
// Why not config.LoadDefaultConfig: it links the whole credential chain — SSO, SSO OIDC, sign-in,
// STS web identity, IMDS — whose packages' init alone costs a function about a quarter of an
// aws-lambda-go hello-world's cold start (make bench-cold), for sources a Lambda function never
// reads. The CLI, which runs on a person's machine with profiles, keeps the default chain.
//
// getenv is os.LookupEnv in production. Errors: AWS_REGION, AWS_ACCESS_KEY_ID or
// AWS_SECRET_ACCESS_KEY unset, or AWS_MAX_ATTEMPTS not a positive integer.
func AWSConfig(getenv func(string) (string, bool)) (aws.Config, error) {
	get := func(name string) string { v, _ := getenv(name); return strings.TrimSpace(v) }
	var errs []error
	region := get("AWS_REGION")
	if region == "" {
		errs = append(errs, errors.New("AWS_REGION is not set (Lambda sets it)"))
	}
	id, secret := get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")
	if id == "" || secret == "" {
		errs = append(errs, errors.New("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set (Lambda sets them from the execution role)"))
	}
	cfg := aws.Config{
		Region:        region,
		Credentials:   aws.NewCredentialsCache(credentials.NewStaticCredentialsProvider(id, secret, get("AWS_SESSION_TOKEN"))),
		Retryer:       newRetryer,
		ConfigSources: []any{endpointEnv(getenv)},
	}
	if strings.EqualFold(get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"), "true") {
		cfg.ConfigSources = []any{ignoreEndpoints{}}
	} else if u := get("AWS_ENDPOINT_URL"); u != "" {
		cfg.BaseEndpoint = aws.String(u)
	}
	if v := get("AWS_MAX_ATTEMPTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			errs = append(errs, fmt.Errorf("AWS_MAX_ATTEMPTS %q: want a positive integer", v))
		}
		cfg.RetryMaxAttempts = n
	}
	return cfg, errors.Join(errs...)
}

// endpointEnv answers each client's question for a service-specific endpoint from
// AWS_ENDPOINT_URL_<SERVICE>, as the SDK's own environment source does: the clients look for
// this method on aws.Config.ConfigSources when they are built (the SDK's
// internal/configsources.ServiceBaseEndpointProvider). A service variable wins over
// AWS_ENDPOINT_URL.
type endpointEnv func(string) (string, bool)

// GetServiceBaseEndpoint returns AWS_ENDPOINT_URL_<sdkID, upper-cased, spaces as underscores>.
func (e endpointEnv) GetServiceBaseEndpoint(_ context.Context, sdkID string) (string, bool, error) {
	v, _ := e("AWS_ENDPOINT_URL_" + strings.ReplaceAll(strings.ToUpper(sdkID), " ", "_"))
	v = strings.TrimSpace(v)
	return v, v != "", nil
}

// ignoreEndpoints is AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true: every endpoint variable is
// ignored (the SDK's internal/configsources.IgnoreConfiguredEndpointsProvider).
type ignoreEndpoints struct{}

// GetIgnoreConfiguredEndpoints says configured endpoints are ignored.
func (ignoreEndpoints) GetIgnoreConfiguredEndpoints(context.Context) (bool, bool, error) {
	return true, true, nil
}
