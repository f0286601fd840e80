//! Whether the provider accepts a rule's client credentials, asked the way the status
//! condition `CredentialsAccepted` needs: redeem a code that was never issued and read
//! how the token endpoint refuses it.

use crate::auth::idp::{ClientAuth, IdpClient, IdpError};
use crate::compile::AuthPolicy;
use crate::model::CALLBACK_PATH;

/// A code no provider issued: `invalid_grant` for it means the client was accepted.
pub const BOGUS_CODE: &str = "portcullis-diagnose-not-a-real-code";

/// What the token endpoint says of the client's credentials, asked with a made-up code.
#[derive(Clone, Debug, PartialEq)]
pub enum Credentials {
    /// Refused only the code (`invalid_grant`): id, secret and method are right.
    Accepted,
    /// Refused the client: the text says how, for the condition's message.
    Refused(String),
    /// No verdict (unreachable, another error).
    Unknown,
}

/// Redeems a made-up code to learn whether the provider accepts the client.
pub async fn client_credentials(
    idp: &IdpClient,
    policy: &AuthPolicy,
    token_endpoint: &str,
) -> Credentials {
    let client = ClientAuth::of(policy);
    let verifier = "status".repeat(8);
    let redirect_uri = format!("https://portcullis.invalid{CALLBACK_PATH}");
    match idp
        .redeem_code(
            token_endpoint,
            &client,
            BOGUS_CODE,
            &redirect_uri,
            &verifier,
        )
        .await
    {
        Err(IdpError::InvalidGrant { .. }) => Credentials::Accepted,
        Err(IdpError::Status {
            excerpt, status, ..
        }) if excerpt.contains("invalid_client") || status == 401 => Credentials::Refused(format!(
            "{token_endpoint} refused client {}: {status} {excerpt}",
            policy.client_id
        )),
        _ => Credentials::Unknown,
    }
}
