//! The AWS shared config and credentials files, as the AWS SDKs read them: `~/.aws/config`
//! (`$AWS_CONFIG_FILE`; sections `[default]`, `[profile NAME]`, `[sso-session NAME]`) and
//! `~/.aws/credentials` (`$AWS_SHARED_CREDENTIALS_FILE`; sections `[NAME]`).
//!
//! The format, as the SDKs' shared-file specification describes it:
//!
//! ```text
//! file     = *(blank | comment | section *(blank | comment | property | sub-property))
//! comment  = *WSP ("#" | ";") *CHAR
//! section  = *WSP "[" *WSP name *WSP "]" *WSP [comment]
//! property = key *WSP "=" *WSP value          ; not indented; the value runs to the end of the line
//! continued= 1*WSP text                       ; an indented line continues the property above it,
//!                                             ; or, under "key =" with no value, is a sub-property
//! ```
//!
//! Anything else is an error naming the file and the line, never the line's text (it may hold a
//! secret). Keys are compared without regard to case. In the config file, sections other than
//! `default`, `profile NAME`, `sso-session NAME` and `services NAME` are ignored with a warning,
//! as the SDKs do. A profile's settings are the credentials file's section laid over the config
//! file's (the credentials file wins a key both set). Values are held in zeroizing memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use hanzo_kms_core::config::AwsKmsConfig;
use hanzo_kms_core::{Error, ErrorKind, Result};
use zeroize::Zeroizing;

/// The settings of one section, keys lower-cased.
pub(crate) type Section = HashMap<String, Zeroizing<String>>;

/// Both files, parsed, and the profile chosen.
pub(crate) struct AwsFiles {
    /// `profile` of the config section, else `$AWS_PROFILE`, else `default`.
    pub profile: String,
    /// Whether [`AwsFiles::profile`] was named (then a missing profile is an error).
    pub explicit: bool,
    pub config_path: Option<PathBuf>,
    pub credentials_path: Option<PathBuf>,
    /// `$HOME`, for `~/.aws/sso/cache`.
    pub home: Option<PathBuf>,
    config: HashMap<String, Section>,
    credentials: HashMap<String, Section>,
    sso_sessions: HashMap<String, Section>,
    /// Why a file could not be read or parsed: reported by [`AwsFiles::check`] when the files
    /// are needed, so a broken file does not stop credentials and a region given otherwise.
    broken: Option<(ErrorKind, String)>,
}

/// One profile's settings: the credentials file's over the config file's.
pub(crate) struct Profile<'a> {
    pub name: &'a str,
    files: &'a AwsFiles,
}

impl AwsFiles {
    /// Read and parse both files; a missing file is empty, an unreadable or malformed one an
    /// error naming it, which [`AwsFiles::check`] returns.
    pub(crate) fn load(c: &AwsKmsConfig, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let mut files = Self::unread(c, env);
        if let Err(e) = files.read() {
            files.config.clear();
            files.credentials.clear();
            files.sso_sessions.clear();
            files.broken = Some((e.kind(), e.message().to_owned()));
        }
        files
    }

    /// The error a broken file gave, if any.
    pub(crate) fn check(&self) -> Result<()> {
        match &self.broken {
            Some((kind, m)) => Err(Error::new(*kind, m.clone())),
            None => Ok(()),
        }
    }

    fn unread(c: &AwsKmsConfig, env: &dyn Fn(&str) -> Option<String>) -> Self {
        let env = |n: &str| env(n).filter(|v| !v.is_empty());
        let home = env("HOME").map(PathBuf::from);
        let config_path = env("AWS_CONFIG_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/config")));
        let credentials_path = env("AWS_SHARED_CREDENTIALS_FILE")
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws/credentials")));
        let named = c.profile.clone().or_else(|| env("AWS_PROFILE"));
        Self {
            explicit: named.is_some(),
            profile: named.unwrap_or_else(|| "default".into()),
            config_path,
            credentials_path,
            home,
            config: HashMap::new(),
            credentials: HashMap::new(),
            sso_sessions: HashMap::new(),
            broken: None,
        }
    }

    fn read(&mut self) -> Result<()> {
        if let Some(path) = &self.config_path
            && let Some(text) = read(path)?
        {
            for (kind, name, section) in parse(&text, path)? {
                match kind {
                    Kind::Profile => merge(&mut self.config, name, section),
                    Kind::SsoSession => merge(&mut self.sso_sessions, name, section),
                    Kind::Other => {}
                }
            }
        }
        if let Some(path) = &self.credentials_path
            && let Some(text) = read(path)?
        {
            for (_, name, section) in parse_sections(&text, path, false)? {
                merge(&mut self.credentials, name, section);
            }
        }
        Ok(())
    }

    /// The profile `name`, if either file has it.
    pub(crate) fn get<'a>(&'a self, name: &'a str) -> Option<Profile<'a>> {
        (self.config.contains_key(name) || self.credentials.contains_key(name))
            .then_some(Profile { name, files: self })
    }

    /// The chosen profile's `region`, if set.
    pub(crate) fn region(&self) -> Option<String> {
        self.get(&self.profile)
            .and_then(|p| p.value("region").map(str::to_owned))
    }

    /// Where the profiles are, for messages: "FILE and FILE".
    pub(crate) fn describe(&self) -> String {
        let shown: Vec<String> = [&self.credentials_path, &self.config_path]
            .into_iter()
            .flatten()
            .map(|p| p.display().to_string())
            .collect();
        if shown.is_empty() {
            "no shared config or credentials file ($HOME is not set)".into()
        } else {
            shown.join(" and ")
        }
    }

    /// Setting `key` of `[sso-session NAME]`; `Err` if there is no such section.
    pub(crate) fn sso_session(
        &self,
        name: &str,
        key: &str,
    ) -> std::result::Result<Option<&str>, ()> {
        let s = self.sso_sessions.get(name).ok_or(())?;
        Ok(s.get(key).map(|v| v.as_str()).filter(|v| !v.is_empty()))
    }
}

impl Profile<'_> {
    /// The setting `key` (lower-case), credentials file first; `None` if unset or empty.
    pub(crate) fn value(&self, key: &str) -> Option<&str> {
        fn from<'m>(m: &'m HashMap<String, Section>, name: &str, key: &str) -> Option<&'m str> {
            m.get(name)
                .and_then(|s| s.get(key))
                .map(|v| v.as_str())
                .filter(|v| !v.is_empty())
        }
        from(&self.files.credentials, self.name, key)
            .or_else(|| from(&self.files.config, self.name, key))
    }

    /// Which file(s) define it, for messages.
    pub(crate) fn location(&self) -> String {
        let mut at = Vec::new();
        if self.files.credentials.contains_key(self.name)
            && let Some(p) = &self.files.credentials_path
        {
            at.push(p.display().to_string());
        }
        if self.files.config.contains_key(self.name)
            && let Some(p) = &self.files.config_path
        {
            at.push(p.display().to_string());
        }
        format!("profile '{}' of {}", self.name, at.join(" and "))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Other,
    Profile,
    SsoSession,
}

impl Kind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Other => "other",
            Kind::Profile => "profile",
            Kind::SsoSession => "sso-session",
        }
    }
}

fn merge(into: &mut HashMap<String, Section>, name: String, section: Section) {
    into.entry(name).or_default().extend(section);
}

fn read(path: &Path) -> Result<Option<Zeroizing<String>>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes = Zeroizing::new(bytes);
            match std::str::from_utf8(&bytes) {
                Ok(s) => Ok(Some(Zeroizing::new(s.to_owned()))),
                Err(_) => Err(bad(path, None, "is not UTF-8 text")),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(bad(path, None, &format!("cannot be read ({e})"))),
    }
}

/// The config file's sections, named as the SDKs name them.
fn parse(text: &str, path: &Path) -> Result<Vec<(Kind, String, Section)>> {
    parse_sections(text, path, true)
}

/// The sections of `text`; `config` selects the config file's naming (`[profile NAME]`).
pub(crate) fn parse_sections(
    text: &str,
    path: &Path,
    config: bool,
) -> Result<Vec<(Kind, String, Section)>> {
    let mut out: Vec<(Kind, String, Section)> = Vec::new();
    // The key of the last property, and whether it had a value (else it opens sub-properties).
    let mut last: Option<(String, bool)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if line.starts_with('[') {
            let Some(end) = line.find(']') else {
                return Err(bad(path, Some(n), "a section header has no closing ']'"));
            };
            let rest = line[end + 1..].trim_start();
            if !(rest.is_empty() || rest.starts_with('#') || rest.starts_with(';')) {
                return Err(bad(path, Some(n), "text follows a section header's ']'"));
            }
            let name = line[1..end].trim();
            if name.is_empty() {
                return Err(bad(path, Some(n), "a section header has no name"));
            }
            // The credentials file names a profile as it is; so does `[default]` anywhere.
            let (kind, name) = if !config || name == "default" {
                (Kind::Profile, name.to_owned())
            } else if let Some((prefix, rest)) = name.split_once(char::is_whitespace) {
                let rest = rest.trim();
                if rest.is_empty() || rest.contains(char::is_whitespace) {
                    return Err(bad(
                        path,
                        Some(n),
                        "a section name has spaces inside it (expected [profile NAME])",
                    ));
                }
                match prefix {
                    "profile" => (Kind::Profile, rest.to_owned()),
                    "sso-session" => (Kind::SsoSession, rest.to_owned()),
                    _ => (Kind::Other, rest.to_owned()),
                }
            } else {
                tracing::warn!(
                    file = %path.display(),
                    line = n,
                    "AWS config file section [{name}] is ignored: profiles there are [profile {name}]"
                );
                (Kind::Other, name.to_owned())
            };
            out.push((kind, name, Section::new()));
            last = None;
            continue;
        }
        let indented = raw.starts_with([' ', '\t']);
        let Some((_, _, section)) = out.last_mut() else {
            return Err(bad(
                path,
                Some(n),
                "a setting comes before any [section] header",
            ));
        };
        if indented {
            // A continuation of the property above, or one of its sub-properties.
            match &last {
                None => {
                    return Err(bad(
                        path,
                        Some(n),
                        "an indented line does not follow a setting",
                    ));
                }
                Some((_, false)) => {
                    if !line.contains('=') {
                        return Err(bad(path, Some(n), "a sub-setting is not `key = value`"));
                    }
                    // Sub-properties (`s3 =` / `  max_concurrent_requests = 20`) are not used here.
                }
                Some((key, true)) => {
                    if let Some(v) = section.get_mut(key) {
                        v.push('\n');
                        v.push_str(line);
                    }
                }
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(bad(
                path,
                Some(n),
                "expected `key = value` or a [section] header",
            ));
        };
        let key = key.trim();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(bad(path, Some(n), "a setting's key is empty or has spaces"));
        }
        let key = key.to_ascii_lowercase();
        let value = value.trim();
        last = Some((key.clone(), !value.is_empty()));
        section.insert(key, Zeroizing::new(value.to_owned()));
    }
    Ok(out)
}

fn bad(path: &Path, line: Option<usize>, what: &str) -> Error {
    let at = match line {
        Some(n) => format!("{} line {n}", path.display()),
        None => path.display().to_string(),
    };
    Error::new(
        ErrorKind::Config,
        format!("AWS KMS: the AWS shared config file {at}: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sections(text: &str, config: bool) -> Result<Vec<(Kind, String, Section)>> {
        parse_sections(text, Path::new("/x/config"), config)
    }

    #[test]
    fn profiles_sub_properties_and_comments() {
        let text = "# top\n[default]\nregion = eu-west-1\n\n[profile dev] ; comment\n\
                    Role_Arn = arn:aws:iam::1:role/r\ns3 =\n  max_concurrent_requests = 20\n\
                    source_profile=default\n[sso-session corp]\nsso_region = us-east-1\n\
                    [services s]\nkms =\n  endpoint_url = http://x\n[stray]\nk = v\n";
        let s = sections(text, true).unwrap();
        let names: Vec<_> = s.iter().map(|(k, n, _)| (*k, n.as_str())).collect();
        assert_eq!(
            names,
            [
                (Kind::Profile, "default"),
                (Kind::Profile, "dev"),
                (Kind::SsoSession, "corp"),
                (Kind::Other, "s"),
                (Kind::Other, "stray")
            ]
        );
        assert_eq!(s[0].2["region"].as_str(), "eu-west-1");
        assert_eq!(s[1].2["role_arn"].as_str(), "arn:aws:iam::1:role/r");
        assert_eq!(s[1].2["source_profile"].as_str(), "default");
        assert!(!s[1].2.contains_key("max_concurrent_requests"));
        // In the credentials file, [profile x] is not special.
        let s = sections("[profile x]\na = 1\n", false).unwrap();
        assert_eq!(s[0].1, "profile x");
    }

    #[test]
    fn malformed_lines_name_the_file_and_line_but_not_the_text() {
        for (text, line, why) in [
            (
                "[default]\naws_secret_access_key wJalrSECRET\n",
                2,
                "key = value",
            ),
            (
                "aws_secret_access_key = wJalrSECRET\n",
                1,
                "before any [section]",
            ),
            ("[default\nk = wJalrSECRET\n", 1, "closing ']'"),
            ("[default] wJalrSECRET\n", 1, "follows a section"),
            ("[]\n", 1, "no name"),
            ("[default]\n  wJalrSECRET = 1\n", 2, "indented line"),
            ("[default]\ns3 =\n  wJalrSECRET\n", 3, "sub-setting"),
            ("[default]\nmy key = wJalrSECRET\n", 2, "spaces"),
            ("[profile a b]\n", 1, "spaces inside"),
        ] {
            let e = sections(text, true)
                .err()
                .unwrap_or_else(|| panic!("{text:?}"));
            let m = e.message();
            assert!(m.contains(&format!("/x/config line {line}:")), "{m}");
            assert!(m.contains(why), "{why:?} not in {m}");
            assert!(!m.contains("wJalrSECRET"), "{m}");
            assert_eq!(e.kind(), ErrorKind::Config);
        }
    }

    #[test]
    fn credentials_file_wins_over_config_file_and_region_is_read() {
        let dir = std::env::temp_dir().join(format!("hanzo-kms-awsprof-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("config");
        let creds = dir.join("credentials");
        std::fs::write(
            &cfg,
            "[profile p]\nregion = ap-south-1\nrole_arn = from-config\nexternal_id = e\n",
        )
        .unwrap();
        std::fs::write(&creds, "[p]\nrole_arn = from-credentials\n").unwrap();
        let (c, k) = (cfg.display().to_string(), creds.display().to_string());
        let env = move |n: &str| match n {
            "AWS_CONFIG_FILE" => Some(c.clone()),
            "AWS_SHARED_CREDENTIALS_FILE" => Some(k.clone()),
            "AWS_PROFILE" => Some("p".into()),
            _ => None,
        };
        let f = AwsFiles::load(&AwsKmsConfig::default(), &env);
        f.check().unwrap();
        assert!(f.explicit);
        assert_eq!(f.region().as_deref(), Some("ap-south-1"));
        let p = f.get("p").unwrap();
        assert_eq!(p.value("role_arn"), Some("from-credentials"));
        assert_eq!(p.value("external_id"), Some("e"));
        assert!(f.get("q").is_none());
        // The config section's profile comes before $AWS_PROFILE.
        let c = AwsKmsConfig {
            profile: Some("q".into()),
            ..Default::default()
        };
        assert_eq!(AwsFiles::load(&c, &env).profile, "q");
        // A broken file is reported when the files are needed.
        std::fs::write(&creds, "[p]\nrole_arn from-credentials\n").unwrap();
        let f = AwsFiles::load(&c, &env);
        let e = f.check().unwrap_err();
        assert!(e.message().contains("credentials line 2"), "{e}");
        assert!(f.region().is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
