#include <gtest/gtest.h>

#include <string>

#include "duplex/base/error.hpp"
#include "duplex/runtime/workload/request_trace.hpp"

namespace duplex::runtime {
namespace {

std::string error_of(const std::string& text) {
  try {
    parse_request_trace(text, "t.csv");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(RequestTrace, NativeSchema) {
  const auto rows = parse_request_trace("# a comment\narrival_s,input_tokens,output_tokens\r\n0.5,100,20\r\n\n"
                                        "0.25, 7 ,3\n",
                                        "t.csv");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[0], (RequestSpec{0, seconds(0.25), 7, 3}));
  EXPECT_EQ(rows[1], (RequestSpec{1, seconds(0.5), 100, 20}));
}

TEST(RequestTrace, ColumnsInAnyOrderAndExtraColumnsIgnored) {
  const auto rows = parse_request_trace("output_tokens,note,input_tokens,arrival_s\n5,x,9,1.5\n", "t.csv");
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows[0], (RequestSpec{0, seconds(1.5), 9, 5}));
}

TEST(RequestTrace, AzureSchemaWithDatetimesRelativeToTheFirstRow) {
  const auto rows = parse_request_trace("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                        "2023-11-16 18:15:46.6805900,374,44\n"
                                        "2023-11-16 18:15:50.9951690,396,109\n"
                                        "2023-11-17 00:00:00,10,1\n",
                                        "azure.csv");
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0].arrival, Time{});
  EXPECT_EQ(rows[0].input_tokens, 374);
  EXPECT_EQ(rows[0].output_tokens, 44);
  EXPECT_NEAR(rows[1].arrival.si(), 4.314579, 1e-9);
  // Across midnight: 5 h 44 min 13.3194100 s later.
  EXPECT_NEAR(rows[2].arrival.si(), 5 * 3600 + 44 * 60 + 13.31941, 1e-9);
}

TEST(RequestTrace, AzureSchemaAcceptsSeconds) {
  const auto rows = parse_request_trace("TIMESTAMP,ContextTokens,GeneratedTokens\n10.5,4,4\n12,4,4\n", "a.csv");
  EXPECT_EQ(rows[0].arrival, Time{});
  EXPECT_EQ(rows[1].arrival, seconds(1.5));
}

TEST(RequestTrace, LimitKeepsTheEarliest) {
  const auto rows = parse_request_trace("arrival_s,input_tokens,output_tokens\n3,1,1\n1,2,2\n2,3,3\n", "t.csv", 2);
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(rows[1].input_tokens, 3);
}

TEST(RequestTrace, ErrorsNameFileLineColumnAndExpectedForm) {
  const std::string header = "arrival_s,input_tokens,output_tokens\n";
  std::string e = error_of(header + "0,10,5\n1.0,ten,5\n");
  EXPECT_NE(e.find("t.csv:3"), std::string::npos) << e;
  EXPECT_NE(e.find("input_tokens"), std::string::npos) << e;
  EXPECT_NE(e.find("\"ten\""), std::string::npos) << e;
  EXPECT_NE(e.find("expected an integer"), std::string::npos) << e;

  e = error_of(header + "-1,10,5\n");
  EXPECT_NE(e.find("t.csv:2: column arrival_s"), std::string::npos) << e;
  EXPECT_NE(e.find("expected seconds"), std::string::npos) << e;

  e = error_of(header + "0,10,0\n");
  EXPECT_NE(e.find("column output_tokens"), std::string::npos) << e;

  e = error_of(header + "0,10\n");
  EXPECT_NE(e.find("t.csv:2: 2 fields; expected 3"), std::string::npos) << e;

  e = error_of("time,input_tokens,output_tokens\n0,1,1\n");
  EXPECT_NE(e.find("names no arrival column"), std::string::npos) << e;

  e = error_of("TIMESTAMP,ContextTokens\n0,1\n");
  EXPECT_NE(e.find("no GeneratedTokens column"), std::string::npos) << e;

  e = error_of("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-13-01 00:00:00,1,1\n");
  EXPECT_NE(e.find("column TIMESTAMP"), std::string::npos) << e;
  EXPECT_NE(e.find("YYYY-MM-DD HH:MM:SS"), std::string::npos) << e;
  // Days past their month's end: February 30th, and the 29th outside a leap year; 2024-02-29 is a day.
  for (const char* day : {"2023-02-30", "2023-02-29", "2023-04-31"})
    EXPECT_NE(error_of(std::string("TIMESTAMP,ContextTokens,GeneratedTokens\n") + day + " 00:00:00,1,1\n")
                  .find("column TIMESTAMP"),
              std::string::npos)
        << day;
  EXPECT_EQ(parse_request_trace("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-02-29 00:00:00,1,1\n", "a.csv")
                .size(),
            1u);

  // A column named twice (which one would be read?) is refused, naming it.
  e = error_of("arrival_s,input_tokens,output_tokens,input_tokens\n0,10,5,7\n");
  EXPECT_NE(e.find("t.csv:1: column \"input_tokens\" appears twice in the header"), std::string::npos) << e;

  EXPECT_NE(error_of(header).find("no request rows"), std::string::npos);
  EXPECT_NE(error_of("").find("no header"), std::string::npos);
}

TEST(RequestTrace, MissingFileIsError) {
  EXPECT_THROW(read_request_trace("/nonexistent/trace.csv"), Error);
}

}  // namespace
}  // namespace duplex::runtime
