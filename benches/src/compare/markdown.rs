//! Text for the markdown the comparison writes: rates with thousands separators, and
//! free text made safe for one table cell.

/// Longest failure reason shown in a table cell; the full text is in `summary.json`.
const CELL_REASON_CHARS: usize = 160;

/// `1234567.8` → `1,234,568`.
pub fn format_rate(requests_per_second: f64) -> String {
    let digits = format!("{:.0}", requests_per_second.max(0.0));
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// Text made safe for one markdown table cell: one line, no column separators, bounded length.
pub fn table_cell(text: &str) -> String {
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let shortened = if one_line.chars().count() > CELL_REASON_CHARS {
        let kept: String = one_line.chars().take(CELL_REASON_CHARS).collect();
        format!("{kept}…")
    } else {
        one_line
    };
    shortened.replace('|', "\\|")
}
