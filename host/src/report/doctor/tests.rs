//! Tables of the checks' verdicts, from canned answers and real directories.

#![allow(clippy::unwrap_used)]
use super::dirs::*;
use super::model::*;
use super::telegram::*;
use super::*;

#[test]
fn model_list_answers() {
    let url = "http://m/v1/models";
    // (status, body, key set, level, models listed, detail contains)
    type Row<'a> = (u16, &'a str, bool, Level, Option<usize>, &'a str);
    let table: &[Row] = &[
        (
            200,
            r#"{"object":"list","data":[{"id":"a"},{"id":"b"}]}"#,
            true,
            Level::Ok,
            Some(2),
            "lists 2 models",
        ),
        (
            200,
            "<html>hi</html>",
            true,
            Level::Warn,
            None,
            "not with a model list",
        ),
        (
            401,
            r#"{"error":"bad key"}"#,
            true,
            Level::Fail,
            None,
            "HTTP 401",
        ),
        (403, "", false, Level::Fail, None, "(empty body)"),
        (
            404,
            "not found",
            true,
            Level::Warn,
            None,
            "has no model list",
        ),
        (500, "boom", true, Level::Fail, None, "HTTP 500: boom"),
    ];
    for &(status, body, has_key, level, models, detail) in table {
        let listing = judge_model_list(url, status, body, has_key);
        assert_eq!(listing.check.level, level, "{status} {body}");
        assert_eq!(listing.models.map(|m| m.len()), models, "{status} {body}");
        assert!(
            listing.check.detail.contains(detail),
            "{status}: {}",
            listing.check.detail
        );
        assert_eq!(listing.check.hint.is_some(), level != Level::Ok);
    }
    let no_key = judge_model_list(url, 401, "", false);
    assert!(no_key.check.hint.unwrap().contains("set OPENAI_API_KEY"));
}

#[test]
fn listed_models() {
    let served = vec!["gpt-4o".to_owned(), "llama3:latest".to_owned()];
    let table = [
        ("gpt-4o", true),
        ("llama3", true),
        ("llama3:latest", true),
        ("gpt-4", false),
        ("llama3:8b", false),
    ];
    for (model, want) in table {
        assert_eq!(is_listed(model, &served), want, "{model}");
    }
}

#[test]
fn get_me_answers_never_show_the_token() {
    let token = "123:SECRET";
    let ok = judge_get_me(
        200,
        r#"{"ok":true,"result":{"id":42,"is_bot":true,"username":"clawbox_bot"}}"#,
        token,
    );
    assert_eq!(ok.level, Level::Ok);
    assert_eq!(ok.detail, "token valid: bot @clawbox_bot (id 42)");
    let table = [
        (
            401,
            r#"{"ok":false,"error_code":401,"description":"Unauthorized"}"#,
        ),
        (
            404,
            r#"{"ok":false,"error_code":404,"description":"Not Found"}"#,
        ),
        (500, "bad gateway for /bot123:SECRET/getMe"),
    ];
    for (status, body) in table {
        let check = judge_get_me(status, body, token);
        assert_eq!(check.level, Level::Fail, "{status}");
        assert!(!check.detail.contains("SECRET"), "{}", check.detail);
        assert!(check.hint.is_some());
    }
    assert!(
        judge_get_me(401, "", token)
            .hint
            .unwrap()
            .contains("@BotFather")
    );
}

#[test]
fn directories() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(
        dir_check("data dir", "DATA_DIR", &data, true).level,
        Level::Ok
    );
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let open = dir_check("data dir", "DATA_DIR", &data, true);
    assert_eq!(open.level, Level::Warn, "{open:?}");
    assert!(open.hint.unwrap().contains("chmod 700"));
    // Groups are not private.
    assert_eq!(
        dir_check("groups dir", "GROUPS_DIR", &data, false).level,
        Level::Ok
    );
    // Missing, under a writable parent: created at start.
    let later = dir.path().join("later/data");
    let check = dir_check("data dir", "DATA_DIR", &later, true);
    assert_eq!(check.level, Level::Ok, "{check:?}");
    assert!(check.detail.contains("does not exist yet"));
    // A file where the directory should be, and a path below a file.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let check = dir_check("data dir", "DATA_DIR", &file, true);
    assert_eq!(check.level, Level::Fail);
    assert!(check.detail.contains("is not a directory"), "{check:?}");
    assert!(check.hint.unwrap().contains("DATA_DIR"));
    let below = file.join("data");
    let check = dir_check("data dir", "DATA_DIR", &below, true);
    assert_eq!(check.level, Level::Fail, "{check:?}");
}

#[test]
fn disk_use_of_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    assert_eq!(
        disk_use_check(&data, 30),
        None,
        "nothing to say before the first start"
    );
    std::fs::create_dir_all(data.join("sessions/default/s1")).unwrap();
    std::fs::write(data.join("clawbox.db"), vec![0u8; 3 * 1024 * 1024]).unwrap();
    std::fs::write(
        data.join("sessions/default/s1/inbound.db"),
        vec![0u8; 1024 * 1024],
    )
    .unwrap();
    let check = disk_use_check(&data, 30).unwrap();
    assert_eq!(check.level, Level::Ok);
    assert!(
        check
            .detail
            .starts_with(&format!("4 MB in {} (1 MB of it sessions)", data.display())),
        "{}",
        check.detail
    );
    assert!(
        check.detail.contains("after 30 days (RETENTION_DAYS)"),
        "{}",
        check.detail
    );
    assert_eq!(bytes(2048), "2 KB");
}

#[test]
fn loose_agent_folders_are_reported() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let agent = |folder: &str| AgentInfo {
        id: folder.to_owned(),
        folder: folder.to_owned(),
        model: None,
    };
    let agents = [agent("a"), agent("b"), agent("missing")];
    assert!(agent_folders_check(dir.path(), &agents).is_none());
    for (folder, mode) in [("a", 0o700), ("b", 0o755)] {
        let d = dir.path().join(folder);
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let check = agent_folders_check(dir.path(), &agents).unwrap();
    assert_eq!(check.level, Level::Warn, "{check:?}");
    assert!(check.detail.contains("/b (mode 755)"), "{check:?}");
    assert!(!check.detail.contains("/a "), "{check:?}");
    std::fs::set_permissions(dir.path().join("b"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let check = agent_folders_check(dir.path(), &agents).unwrap();
    assert_eq!(check.level, Level::Ok, "{check:?}");
    assert_eq!(check.detail, "2 private (mode 700)");
}
