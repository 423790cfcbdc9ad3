//! A small result table: printed aligned for people, or as JSON for machines.

use std::fmt::Write as _;

/// One section of the `netron-bench` report.
#[derive(Debug, Clone)]
pub struct Table {
    /// Section title, e.g. "codec".
    pub title: String,
    /// Column headings.
    pub columns: Vec<String>,
    /// Rows of cells, each as many as `columns`.
    pub rows: Vec<Vec<String>>,
    /// Free-text notes printed under the table (how a figure was obtained).
    pub notes: Vec<String>,
}

impl Table {
    /// Starts a table with the given title and column headings.
    pub fn new(title: &str, columns: &[&str]) -> Self {
        Self {
            title: title.to_owned(),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Appends a row; missing cells are left blank, extra cells are dropped.
    pub fn row<S: AsRef<str>>(&mut self, cells: &[S]) {
        let mut r: Vec<String> = cells.iter().map(|c| c.as_ref().to_owned()).collect();
        r.resize(self.columns.len(), String::new());
        self.rows.push(r);
    }

    /// Appends a note line.
    pub fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// Renders the table as aligned text.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        let _ = writeln!(out, "== {} ==", self.title);
        let line = |out: &mut String, cells: &[String]| {
            for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                if i == 0 {
                    let _ = write!(out, "{c:<w$}");
                } else {
                    let _ = write!(out, "  {c:>w$}");
                }
            }
            out.push('\n');
        };
        line(&mut out, &self.columns);
        let total: usize = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
        out.push_str(&"-".repeat(total));
        out.push('\n');
        for r in &self.rows {
            line(&mut out, r);
        }
        for n in &self.notes {
            let _ = writeln!(out, "  * {n}");
        }
        out
    }

    /// Renders the table as Markdown: a heading line, the table, the notes as a list.
    #[cfg_attr(not(feature = "compare"), allow(dead_code))]
    pub fn to_markdown(&self) -> String {
        let cell = |c: &str| c.replace('|', "\\|");
        let line = |cells: &[String]| {
            format!(
                "| {} |\n",
                cells
                    .iter()
                    .map(|c| cell(c))
                    .collect::<Vec<_>>()
                    .join(" | ")
            )
        };
        let mut out = format!("**{}**\n\n", self.title);
        out.push_str(&line(&self.columns));
        out.push_str(&line(&vec!["---".to_owned(); self.columns.len()]));
        for r in &self.rows {
            out.push_str(&line(r));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "- {n}");
            }
        }
        out
    }

    /// Renders the table as one JSON object.
    pub fn to_json(&self) -> String {
        let esc = |s: &str| {
            let mut o = String::with_capacity(s.len() + 2);
            o.push('"');
            for ch in s.chars() {
                match ch {
                    '"' => o.push_str("\\\""),
                    '\\' => o.push_str("\\\\"),
                    '\n' => o.push_str("\\n"),
                    c if (c as u32) < 0x20 => {
                        let _ = write!(o, "\\u{:04x}", c as u32);
                    }
                    c => o.push(c),
                }
            }
            o.push('"');
            o
        };
        let list = |v: &[String]| v.iter().map(|s| esc(s)).collect::<Vec<_>>().join(",");
        let rows = self
            .rows
            .iter()
            .map(|r| format!("[{}]", list(r)))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "{{\"title\":{},\"columns\":[{}],\"rows\":[{}],\"notes\":[{}]}}",
            esc(&self.title),
            list(&self.columns),
            rows,
            list(&self.notes)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_aligns_and_json_escapes() {
        let mut t = Table::new("t", &["name", "value"]);
        t.row(&["a\"b", "1"]);
        t.row(&["long name", "22"]);
        let text = t.render();
        assert!(text.contains("long name"));
        assert!(text.lines().nth(1).unwrap().starts_with("name     "));
        assert!(t.to_json().contains("\"a\\\"b\""));
        let md = t.to_markdown();
        assert!(md.contains("| name | value |\n| --- | --- |\n| a\"b | 1 |"));
    }
}
