//! Who a source logs in as: `username`, `password_file`, `password_env`, written flat in the
//! blocks that take them (a Redis source's data nodes, its `sentinel`, a RabbitMQ broker) and
//! read into one [`Credentials`] by [`crate::sources::field_group`].

use std::path::PathBuf;

use serde::de::MapAccess;

use super::field_group::FieldGroup;
use crate::primitives::{ConfigError, Secret};

/// A user name and where its password comes from. `Debug` never shows the password.
#[derive(Clone, Default, PartialEq)]
pub struct Credentials {
    /// The user name (a Redis ACL user, a RabbitMQ user).
    pub username: Option<String>,
    /// File holding the password (a mounted Secret).
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// The password, read at load from `password_file` or `password_env`
    /// ([`Credentials::resolve`]).
    pub password: Option<Secret>,
}

impl FieldGroup for Credentials {
    const FIELDS: &'static [&'static str] = &["username", "password_file", "password_env"];

    fn read_value<'de, A: MapAccess<'de>>(
        &mut self,
        field: &'static str,
        map: &mut A,
    ) -> Result<(), A::Error> {
        match field {
            "username" => self.username = map.next_value()?,
            "password_file" => self.password_file = map.next_value()?,
            "password_env" => self.password_env = map.next_value()?,
            other => unreachable!("{other} is not one of Credentials::FIELDS"),
        }
        Ok(())
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .field("password", &self.password)
            .finish()
    }
}

impl Credentials {
    /// Reads the password from `password_file` or `password_env` (at most one may be given);
    /// `at` names the block in errors.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when both are given, the file cannot be read or the variable
    /// is unset.
    pub fn resolve(&mut self, at: &str) -> Result<(), ConfigError> {
        self.password = Secret::resolve(
            self.password_file.as_deref(),
            self.password_env.as_deref(),
            at,
        )?;
        Ok(())
    }

    /// The password now: `password_file`'s current contents (a token a sidecar refreshes is
    /// picked up at the next connect), else what was read at load.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when the file cannot be read.
    pub fn current_password(&self) -> Result<Option<Secret>, ConfigError> {
        match &self.password_file {
            Some(path) => Secret::resolve(Some(path), None, "password_file"),
            None => Ok(self.password.clone()),
        }
    }
}
